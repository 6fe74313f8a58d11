from tarn.cli import main

main()
