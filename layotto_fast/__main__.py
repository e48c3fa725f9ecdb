from layotto_fast.cli import main

raise SystemExit(main())
