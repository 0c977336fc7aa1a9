from mypypi2.cli import main

raise SystemExit(main())
