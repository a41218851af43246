from udpbeat.cli import main

main()
