from tarn.cli import app

app(prog_name="tarn")
