# Argument checks shared by the experiment scripts (source it): one error line and exit 2 on a bad value.
# positive_int NAME VALUE WHAT   e.g. positive_int LIMIT "$LIMIT" "questions per Spec-Bench category"
positive_int() {
  [[ "$2" =~ ^[1-9][0-9]*$ ]] || { echo "$1 '$2': a positive integer ($3)" >&2; exit 2; }
}
