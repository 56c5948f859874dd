import os
import subprocess
import sys


def _run(code: str, env: dict[str, str]) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_worker_initializer_gives_each_worker_its_share_of_threads():
    code = (
        "import torch, os; from trainset.pipeline.runner import _init_worker; _init_worker(1, [], os.getppid()); "
        "print(os.environ['OMP_NUM_THREADS'], torch.get_num_threads())"
    )
    assert _run(code, {}) == "1 1"


def test_worker_initializer_keeps_the_users_thread_setting():
    code = (
        "import os; from trainset.pipeline.runner import _init_worker; _init_worker(1, [], os.getppid()); "
        "print(os.environ['OMP_NUM_THREADS'])"
    )
    assert _run(code, {"OMP_NUM_THREADS": "3"}) == "3"
