from proxmigrate.cli import main

raise SystemExit(main())
