from signoff.launch import main

main()
