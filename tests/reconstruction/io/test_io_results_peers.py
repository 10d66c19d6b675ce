"""Result files opened by the field's own readers: nexusformat (NeXpy's library), silx (its NXdata rules for
``default`` are the ones h5web follows), ptychodus' CXI reader and ptychodus' HDF5 product reader."""

import h5py
import numpy as np
import pytest
from nexusformat.nexus import nxload
from ptychodus.api.io import load_product
from ptychodus.plugins.cxi_file import CXIProductFileIO

from reconstruction.io import write_result
from reconstruction.io.export import export_result


def test_nexusformat_finds_the_object_phase_as_the_default_plot(tmp_path, make_result):
    result = make_result()
    root = nxload(str(write_result(result, tmp_path / "r.h5")), "r")
    plot = root.plottable_data
    assert plot is not None and plot.nxname == "data_1" and plot.nxsignal.nxname == "phase"
    np.testing.assert_allclose(plot.nxsignal.nxdata, np.angle(result.object), atol=1e-6)
    assert [a.nxname for a in plot.nxaxes] == ["y", "x"]
    x = plot.nxaxes[1]
    assert x.attrs["units"] == "m" and x.nxdata[1] - x.nxdata[0] == pytest.approx(result.pixel_size_m)
    assert plot.nxsignal.attrs["units"] == "rad"
    assert [s.nxname for s in plot.nxauxiliary_signals] == ["amplitude"]
    assert root["entry_1/instrument_1/detector_1/distance"].attrs["units"] == "m"


def test_ptychodus_cxi_reader_gives_our_object_probe_positions_and_geometry_back(tmp_path, make_result):
    result = make_result()
    product = CXIProductFileIO().read(write_result(result, tmp_path / "r.h5"))
    np.testing.assert_array_equal(product.object_.get_array()[0], result.object)
    np.testing.assert_array_equal(product.probes.get_array()[0], result.probe)
    geometry = product.object_.get_geometry()
    assert geometry.pixel_width_m == pytest.approx(result.pixel_size_m)
    # ptychodus' own mapping from probe positions (m) to object pixels gives our window centres back
    n = result.probe.shape[-1]
    np.testing.assert_allclose(geometry.map_probe_positions_to_object_x_px(product.probe_positions),
                               result.positions_px[:, 1] + (n - 1) / 2, atol=1e-9)
    np.testing.assert_allclose(geometry.map_probe_positions_to_object_y_px(product.probe_positions),
                               result.positions_px[:, 0] + (n - 1) / 2, atol=1e-9)
    params = result.parameters
    assert product.metadata.detector_distance_m == pytest.approx(params.experiment.detector_distance_m)
    assert product.metadata.photon_energy_eV == pytest.approx(12398.419843 / (params.experiment.wavelength_m * 1e10))
    assert [loss.value for loss in product.losses] == pytest.approx(result.errors)


def test_ptychodus_product_reader_opens_the_result_file_itself(tmp_path, make_result):
    """ptychodus offers its HDF5 product reader for .h5 files: our result file is also a product (hard links)."""
    result = make_result()
    path = write_result(result, tmp_path / "r.h5")
    product = load_product(path)
    np.testing.assert_array_equal(product.object_.get_array()[0], result.object)
    np.testing.assert_array_equal(product.probes.get_array()[0], result.probe)
    geometry = product.object_.get_geometry()
    np.testing.assert_allclose(geometry.map_probe_positions_to_object_y_px(product.probe_positions),
                               result.positions_px[:, 0] + (result.probe.shape[-1] - 1) / 2, atol=1e-9)
    assert product.metadata.name == "run7" and [loss.value for loss in product.losses] == pytest.approx(result.errors)
    with h5py.File(path, "r") as f:  # links, not copies
        assert f["object"].id == f["entry_1/image_2/data"].id and f["probe"].id == f["entry_1/image_1/data"].id


def _silx_default(path):
    import silx.io
    from silx.io.nxdata import get_default

    with silx.io.open(str(path)) as h5:
        plot = get_default(h5)
        assert plot is not None, f"silx finds no default NXdata in {path.name}"
        return dict(group=plot.group.name, valid=plot.is_valid, image=plot.is_image, signal=plot.signal[()],
                    signal_name=plot.signal_name, axes=plot.axes_dataset_names, title=plot.title)


@pytest.mark.parametrize("output", ["result", "ptychodus export"])
def test_silx_opens_the_file_on_the_object_phase_image(tmp_path, make_result, output):
    """silx.io.nxdata.get_default follows ``default`` from the root and checks the NXdata (signal, axes, shapes),
    as h5web does: the object's phase is what both show on opening."""
    result = make_result()
    path = write_result(result, tmp_path / "r.h5")
    if output != "result":
        path = export_result(path, "ptychodus", tmp_path / "out")[0]
    found = _silx_default(path)
    assert found["valid"] and found["image"]
    assert found["group"] == ("/entry_1/data_1" if output == "result" else "/entry/data")
    assert found["signal_name"] == "object phase (rad)" and found["axes"] == ["y", "x"]
    np.testing.assert_allclose(found["signal"], np.angle(result.object), atol=1e-6)
    assert found["title"] == "run7: object phase"


def test_nexusformat_plots_the_object_phase_of_the_ptychodus_export(tmp_path, make_result):
    result = make_result()
    product = export_result(write_result(result, tmp_path / "r.h5"), "ptychodus", tmp_path / "out")[0]
    plot = nxload(str(product), "r").plottable_data
    assert plot is not None and plot.nxpath == "/entry/data" and plot.nxsignal.nxname == "phase"
    np.testing.assert_allclose(plot.nxsignal.nxdata, np.angle(result.object), atol=1e-6)
    assert plot.nxsignal.attrs["units"] == "rad"
