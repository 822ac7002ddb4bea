"""lit-gpt-mini's command line: ``python main.py <fit|validate|test|eval|generate|export|prepare> --help``.

``python main.py --help`` describes each command in one line (the list lives in lit_gpt_mini/cli.py).
"""

from lit_gpt_mini.cli import main

if __name__ == "__main__":
    main()
