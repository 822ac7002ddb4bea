"""lit-gpt-mini: ``python main.py {fit,validate,test,predict,generate} --help``."""

from lit_gpt_mini.cli import main

if __name__ == "__main__":
    main()
