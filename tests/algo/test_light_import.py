import subprocess
import sys


def test_algo_imports_with_torch_only():
    code = (
        "import sys, rlkit.algo; "
        "heavy = [m for m in ('ray', 'vllm', 'transformers', 'accelerate') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"rlkit.algo pulled in {out.stdout.strip()}"
