"""The input-size sweep's cliff check (`python -m benchmarks.run --sweep`), on made-up step
times: no timing is measured here."""

from benchmarks.run import SWEEP_SIZES, cliffs, size_sweep


def rows(times_ms: dict[int, float], arch: str = "resnet18", train: bool = True) -> list[dict]:
    return [{"arch": arch, "train": train, "size": size, "step_ms": ms}
            for size, ms in times_ms.items()]


def test_the_sweep_covers_both_resnets_train_and_eval_from_32_to_224():
    workloads = size_sweep(SWEEP_SIZES)
    assert min(SWEEP_SIZES) == 32 and max(SWEEP_SIZES) == 224
    assert {(w.arch, w.train) for w in workloads} == {
        ("resnet18", True), ("resnet18", False), ("resnet34", True), ("resnet34", False)}
    assert all(w.channels == 1 and w.batch == 16 for w in workloads)
    assert len({w.name for w in workloads}) == len(workloads)


def test_a_step_slower_than_a_larger_inputs_is_a_cliff():
    # The speed issue's numbers: 64x64 at 1,877 ms against 128x128 at 815 ms.
    found = cliffs(rows({32: 180, 64: 1877, 96: 290, 128: 815}))
    assert len(found) == 1 and found[0].startswith("resnet18 train 64x64: 1877 ms")


def test_steps_growing_with_area_or_within_the_tolerance_are_no_cliff():
    assert cliffs(rows({32: 180, 64: 200, 96: 290, 128: 450})) == []
    assert cliffs(rows({32: 110, 48: 100}), tolerance=0.25) == []  # noise among tiny steps
    assert cliffs(rows({32: 130, 48: 100}), tolerance=0.25) != []


def test_series_are_compared_only_with_themselves():
    mixed = rows({64: 900}, "resnet34") + rows({128: 450}) + rows({128: 300}, train=False)
    assert cliffs(mixed) == []
