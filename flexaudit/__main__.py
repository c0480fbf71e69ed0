from flexaudit.cli import main

if __name__ == "__main__":  # not when a worker process of flexaudit.jobs imports it
    main()
