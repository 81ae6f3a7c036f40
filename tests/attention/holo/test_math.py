"""holo's HRR math: the stacked spectra equal each tensor's own, and binding then unbinding recovers a value."""
import pytest
import torch

from hf_attn.attention.holo.math import bind, spectra, spectrum, unbind


@pytest.mark.parametrize("tq", [5, 1, 3])  # 3: q holds other tokens than k and v (they are stacked alone)
@pytest.mark.parametrize("project", [True, False])
def test_stacked_spectra_equal_each_tensors_own(project, tq):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 6, tq, 16, generator=g)
    k, v = (torch.randn(2, 2, 5 if tq != 1 else 1, 16, generator=g) for _ in "kv")
    for got, want in zip(spectra(q, k, v, project, 0.2), [spectrum(q, project, 0.2), spectrum(k, project, 0.2),
                                                         spectrum(v, False)]):
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_spectrum_is_the_rfft_and_unbinding_recovers_the_bound_value():
    g = torch.Generator().manual_seed(1)
    k, v = (torch.randn(3, 32, generator=g, dtype=torch.float64) for _ in "kv")
    re, im = spectrum(k, project=False)
    torch.testing.assert_close(torch.complex(re, im).cdouble(), torch.fft.rfft(k), rtol=1e-5, atol=1e-5)
    unit = spectrum(k, project=True, soft=1e-6)
    retrieved = unbind(unit, bind(unit, spectrum(v, False)))
    torch.testing.assert_close(retrieved.double(), v, rtol=1e-3, atol=1e-3)
