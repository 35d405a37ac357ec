"""`python -m gateway` is the `i2v-gateway` command."""

from gateway.cli import main

if __name__ == "__main__":
    main()
