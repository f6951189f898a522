from conduwuit.cli import run

run()
