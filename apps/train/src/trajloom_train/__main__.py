"""``python -m trajloom_train``: the train app's command line (what ``--procs`` launches)."""

from trajloom_train.cli import main

main()
