from quoteapi.cli import main

main()
