"""Long steps outside the train loop show a bar with a count and a rate."""

from cnnjax.data.synthetic_images import SyntheticImageSettings, write_image_folder


def test_writing_the_synthetic_images_counts_them(tmp_path, capsys):
    write_image_folder(SyntheticImageSettings(num_per_class=(("cat", 3), ("dog", 2))), tmp_path)
    err = capsys.readouterr().err
    assert "writing synthetic images: 100%" in err and "5/5" in err and "image/s" in err
