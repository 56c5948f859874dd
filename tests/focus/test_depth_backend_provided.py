from trainset.focus.conformance import DepthBackendContract
from trainset.focus.depth_backends import ProvidedDepth, make_depth_backend


class TestProvidedDepthContract(DepthBackendContract):
    def make_backend(self):
        return make_depth_backend("provided")


def test_provided_backend_params_hold_the_depth_scale():
    assert ProvidedDepth(depth_scale="256").params() == {
        "depth_scale": 256.0,
        "invalid_codes": "default",
        "depth_range_m": [0.001, 10000.0],
    }
