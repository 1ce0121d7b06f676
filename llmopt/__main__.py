from .cli import main

if __name__ == "__main__":  # not when a spawned child (training, ensure_trained) imports it
    raise SystemExit(main())
