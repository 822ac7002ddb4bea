"""lit-gpt-mini's command line: ``python main.py <fit|validate|test|eval|generate|chat|serve|export|prepare> --help``.

``python main.py --help`` describes each command in one line (the list lives in lit_gpt_mini/cli/commands.py).
"""

import sys

try:
    from lit_gpt_mini.cli.main import main
except KeyboardInterrupt:  # Ctrl-C in the first seconds, while torch and Lightning are imported
    print("error: interrupted (Ctrl-C) while starting: nothing was done", file=sys.stderr)
    sys.exit(130)

if __name__ == "__main__":
    main()
