from vidwiz.worker.cli import main

raise SystemExit(main())
