"""Draft training: prompts -> target-generated data (data.py) -> distillation (__main__.py) -> held-out eval (eval.py)."""
