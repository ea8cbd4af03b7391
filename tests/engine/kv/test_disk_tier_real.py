"""The disk tier on the real embedded model: a second process starts from the first one's pages, exactly."""

import random

from tests.engine.conftest import reference_logits, rel_err
from tests.engine.kv.disk_helpers import as_tensor, check_page_file, page_paths, run_worker

P = 16


def test_second_process_reuses_the_prefix_from_disk_on_the_real_model(smol, models_dir, tmp_path):
    kv = tmp_path / "kv"
    rng = random.Random(5)
    prefix = [rng.randrange(3, smol.config.vocab_size) for _ in range(10 * P + 5)]
    first_prompt, second_prompt = prefix + [11, 12, 13], prefix + [21, 22]
    [first], _ = run_worker("smollm2-135m-instruct", kv, [first_prompt], "--models", str(models_dir))
    assert first["usage"]["cached_tokens"] == 0
    assert all(check_page_file(p)["fingerprint"] == smol.fingerprint for p in page_paths(kv))
    [second], _ = run_worker("smollm2-135m-instruct", kv, [second_prompt], "--models", str(models_dir))
    assert second["usage"]["disk_tokens"] == second["usage"]["cached_tokens"] == 10 * P
    assert rel_err(as_tensor(second["logits"]), reference_logits(smol, second_prompt)) <= 1e-4
