import json

from textstats.cli import main


def test_json_output(tmp_path, capsys):
    sample = tmp_path / "sample.txt"
    sample.write_text("Red fish. Blue fish.", encoding="utf-8")
    assert main([str(sample), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["words"] == 4
    assert data["top_words"][0] == ["fish", 2]


def test_missing_file_is_exit_code_2(tmp_path, capsys):
    assert main([str(tmp_path / "absent.txt")]) == 2
    assert capsys.readouterr().err.startswith("error:")
