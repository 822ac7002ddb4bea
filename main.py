"""lit-gpt-mini's command line: ``python main.py <fit|validate|test|eval|generate|chat|serve|export|prepare> --help``.

``python main.py --help`` describes each command in one line (the list lives in lit_gpt_mini/cli/commands.py).
"""

from lit_gpt_mini.cli.main import main

if __name__ == "__main__":
    main()
