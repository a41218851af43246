from _udpbeat_launcher import main

main()
