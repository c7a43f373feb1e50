from adaptive._cli import main

main()
