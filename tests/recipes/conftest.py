import pytest
from accelerate.state import AcceleratorState, GradientState


@pytest.fixture(autouse=True)
def _fresh_accelerate():
    """Each recipe run builds its own Accelerator; accelerate refuses a second one with another mixed precision."""
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
