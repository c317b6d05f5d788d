import os

# Triton kernels run under the interpreter on CPU tensors; the variable must be set before any
# @triton.jit decorator runs, i.e. before semnorm is imported.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

torch.set_num_threads(min(2, torch.get_num_threads()))

# models/ and training/ are installed as semnorm.models / semnorm.training (setup.py package_dir). In a
# source checkout built in place (setup.py build_ext --inplace) they are not inside semnorm/, so point
# the package at the repository root as well; an installed semnorm needs nothing.
try:
    import semnorm.models  # noqa: E402,F401
except ModuleNotFoundError:
    import semnorm  # noqa: E402

    semnorm.__path__.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny networks gain nothing from threads, and on a loaded 2-core machine two OpenMP threads per op
    make every step several times slower; a module opts in with ``pytestmark = usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
