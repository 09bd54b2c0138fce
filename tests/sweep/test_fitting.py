"""attnjax.sweep.fitting: the two-part run of the fit check, the recorded metrics and how they are written."""

from attnjax.sweep import fitting
from attnjax.train import TrainToFit


class FakeTrain:
    """Stands in for a study's fit call: validation accuracy ``curve[i]`` at step ``250 * (i + 1)``."""

    def __init__(self, curve):
        self.curve, self.calls = curve, []

    def __call__(self, state, num_steps, stop, options):
        self.calls.append((state, num_steps, options.get("checkpoint_dir")))
        history = []
        for i in range(num_steps // 250):
            history.append({"step": state + 250 * (i + 1), "val_accuracy": self.curve[(state // 250) + i]})
            reason = stop(history)
            if reason or i + 1 == num_steps // 250:
                history[-1]["stop"] = reason or "budget"
                return history[-1]["step"], history
        raise AssertionError("unreachable")


def test_a_run_that_fits_stops_there_by_default():
    train = FakeTrain([0.5, 0.995, 0.999, 1.0, 1.0, 1.0])
    state, history, at_fit = fitting.train_to_fit(train, 0, 1500, TrainToFit(), {}, lambda s: {"ood_score": s})
    assert state == 750 and at_fit is None and len(train.calls) == 1
    assert fitting.fit_metrics(history, TrainToFit()) == {
        "steps_trained": 750, "stop_reason": "fit", "steps_to_fit": 500,
        "val_curve": [[250, 0.5], [500, 0.995], [750, 0.999]]}


def test_without_stop_at_fit_it_is_scored_at_fit_then_trains_on_in_its_own_checkpoints():
    train = FakeTrain([0.5, 0.995, 0.999, 0.9, 1.0, 1.0])
    state, history, at_fit = fitting.train_to_fit(train, 0, 1500, TrainToFit(stop_at_fit=False),
                                                  {"checkpoint_dir": "/ckpt"}, lambda s: {"ood_score": s / 1000})
    assert at_fit == {"step": 750, "ood_score": 0.75} and state == 1500
    assert train.calls == [(0, 1500, "/ckpt"), (750, 750, "/ckpt/continued")]
    assert [r["step"] for r in history] == [250, 500, 750, 1000, 1250, 1500] and history[-1]["stop"] == "budget"
    assert fitting.fit_metrics(history, TrainToFit())["steps_to_fit"] == 500


def test_labels_and_text():
    runs = [{"steps_to_fit": 500, "stop_reason": "fit", "train_accuracy": 1.0},
            {"steps_to_fit": 1500, "stop_reason": "fit", "train_accuracy": 0.99},
            {"steps_to_fit": None, "stop_reason": "flat", "train_accuracy": 0.6},
            {"steps_to_fit": None, "stop_reason": "budget", "train_accuracy": 0.95}]
    assert [fitting.fit_label(r) for r in runs] == ["fit", "fit", "does not fit at this size", "under-trained"]
    assert fitting.fit_text(runs) == "2/4 fit @1,000 · 1 does not fit at this size · 1 under-trained"
    assert fitting.fit_count_line("lstm", runs, 0.9) == (
        "- lstm: 1 of 4 runs (25.0%) below 90.0% in distribution; 2 fit, 1 does not fit at this size, "
        "1 under-trained")
    assert fitting.val_accuracy({"val_curve": [[250, 0.5], [500, 0.7]], "train_accuracy": 0.9}) == 0.7
    assert fitting.val_accuracy({"train_accuracy": 0.9}) == 0.9  # runs from before train-to-fit
