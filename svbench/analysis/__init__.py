"""Analysis of svbench runs: paper-style tables, figures and Spec-Bench interop.

    python -m svbench.analysis PATH [PATH ...] --out DIR
    python -m svbench.analysis export PATH [PATH ...] --out answers.jsonl [--tokenizer NAME_OR_DIR]

PATH: a run dir (holding records.jsonl), a sweep dir (every records.jsonl below it), a records file
or a Spec-Bench model_answer JSONL file.
"""
from svbench.analysis.inputs import load_records
from svbench.analysis.report import analyze
from svbench.analysis.specbench import export_answers, import_answers

__all__ = ["analyze", "export_answers", "import_answers", "load_records"]
