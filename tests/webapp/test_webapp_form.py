"""The job form: generated from leaf_specs, inline errors, command-string paste, path confinement."""

import pytest
from django.utils.html import escape
from webapp_helpers import small_parameters

from reconstruction.parameters import GROUP_TITLES, leaf_specs
from webapp.jobs.forms import JobForm, display_value, field_name
from webapp.jobs.models import Job

pytestmark = pytest.mark.django_db


def form_data(params, **overrides):
    data = {}
    for spec in leaf_specs():
        value = params.get(spec.path)
        if spec.kind == "bool":
            if value:
                data[field_name(spec.path)] = "on"
        else:
            data[field_name(spec.path)] = value if spec.kind == "choice" else display_value(value)
    data.update(overrides)
    return data


def test_every_leaf_has_a_field_with_unit_and_hint_grouped_by_title(client, user):
    client.force_login(user)
    html = client.get("/jobs/new/").content.decode()
    for spec in leaf_specs():
        assert f'name="{field_name(spec.path)}"' in html, spec.path
        assert escape(spec.hint) in html, spec.path
        if spec.unit:
            assert f"[{spec.unit}]" in html
    for title in GROUP_TITLES.values():
        assert f"<legend>{title}</legend>" in html
    assert 'name="cmdstr"' in html and "Advanced (" in html


def test_defaults_round_trip_through_the_form():
    params = small_parameters()
    form = JobForm(form_data(params))
    assert form.is_valid(), form.errors
    assert form.parameters == params


def test_invalid_values_are_shown_next_to_their_fields(client, user):
    client.force_login(user)
    data = form_data(small_parameters(), **{"reconstruction__iterations": "-3",
                                            "experiment__wavelength_m": "blue"})
    response = client.post("/jobs/new/", data)
    assert response.status_code == 200 and Job.objects.count() == 0
    form = response.context["form"]
    assert "out of range" in form.errors["reconstruction__iterations"][0]
    assert "-lambda=blue" in form.errors["experiment__wavelength_m"][0]
    html = response.content.decode()
    assert 'class="field-error"' in html and "-lambda=blue" in html


def test_valid_form_submits_a_job_and_opens_its_live_view(client, user):
    client.force_login(user)
    data = form_data(small_parameters(), label="my scan", notify_email="on")
    response = client.post("/jobs/new/", data)
    job = Job.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.pk}/"
    assert job.owner == user and job.label == "my scan" and job.notify_email and job.source == "web"
    assert job.parameters == small_parameters().to_dict()


def test_pasted_command_string_replaces_the_fields(client, user):
    client.force_login(user)
    data = form_data(small_parameters(), cmdstr="./ptycho -simulate=1 -size=48 -scanDims=5,7 -i=33 -algorithm=DM")
    client.post("/jobs/new/", data)
    job = Job.objects.get()
    assert job.algorithm == "DM" and job.iterations == 33
    assert job.parameters["preprocessing"]["size_px"] == 48 and job.parameters["experiment"]["scan_dims"] == [5, 7]


def test_bad_command_string_is_explained_under_the_textarea(client, user):
    client.force_login(user)
    response = client.post("/jobs/new/", form_data(small_parameters(), cmdstr="./ptycho -sizee=64"))
    assert "did you mean -size" in response.context["form"].errors["cmdstr"][0]
    assert Job.objects.count() == 0


def test_file_paths_outside_the_data_roots_are_rejected_inline(client, user, data_root):
    client.force_login(user)
    data = form_data(small_parameters(), **{"data__file_pattern": "../../etc/scan_#06d.h5",
                                            "reconstruction__probe_guess": "probes/p.csv"})
    response = client.post("/jobs/new/", data)
    errors = response.context["form"].errors
    assert "outside the data folders" in errors["data__file_pattern"][0]
    assert "reconstruction__probe_guess" not in errors
    response = client.post("/jobs/new/", form_data(small_parameters(), cmdstr="./ptycho -simulate=1 -lf=/etc/passwd"))
    assert "outside the data folders" in response.context["form"].errors["cmdstr"][0]
    assert Job.objects.count() == 0


def test_clone_prefills_the_form_with_the_jobs_parameters(client, user):
    client.force_login(user)
    params = small_parameters(iterations=77)
    job = Job.objects.create(owner=user, label="orig", parameters=params.to_dict(), algorithm="ePIE")
    response = client.get(f"/jobs/{job.pk}/clone/")
    form = response.context["form"]
    assert form.initial["reconstruction__iterations"] == "77"
    assert form.initial["label"] == "orig (copy)"
    assert f"job {job.pk}" in response.content.decode()


def test_uploaded_files_are_stored_in_the_uploads_folder_and_used(client, user, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client.force_login(user)
    positions = SimpleUploadedFile("../../positions.csv", b"0.0, 0.0\n1e-7, 0.0\n", content_type="text/csv")
    data = form_data(small_parameters(), **{"experiment__positions_file__upload": positions})
    response = client.post("/jobs/new/", data)
    assert response.status_code == 302, response.context["form"].errors
    stored = Job.objects.get().parameters["experiment"]["positions_file"]
    uploads = settings.PTYCHOPY_UPLOADS_DIR.resolve()
    assert stored.startswith(str(uploads / "alice")) and stored.endswith("positions.csv")
    with open(stored, "rb") as f:
        assert f.read().startswith(b"0.0, 0.0")


def test_too_large_uploads_are_refused_inline(client, user, settings):
    from django.core.files.uploadedfile import SimpleUploadedFile

    settings.PTYCHOPY_MAX_UPLOAD_BYTES = 10
    client.force_login(user)
    probe = SimpleUploadedFile("probe.csv", b"x" * 100)
    data = form_data(small_parameters(), **{"reconstruction__probe_guess__upload": probe})
    response = client.post("/jobs/new/", data)
    assert "more than the 10 bytes allowed" in response.context["form"].errors["reconstruction__probe_guess__upload"][0]
    assert Job.objects.count() == 0


def test_a_scripted_post_with_only_a_command_string_submits_a_job(client, user):
    client.force_login(user)
    cmd = small_parameters().to_cmdstr()
    response = client.post("/jobs/new/", {"cmdstr": cmd})
    assert response.status_code == 302
    job = Job.objects.get()
    assert job.parameters["preprocessing"]["size_px"] == small_parameters().preprocessing.size_px


def test_blank_fields_take_their_defaults():
    form = JobForm(data={field_name("reconstruction.iterations"): "7", field_name("reconstruction.algorithm"): "",
                         field_name("data.simulate"): "on"}, username="u")
    assert form.is_valid(), form.errors
    assert form.parameters is not None
    assert form.parameters.reconstruction.iterations == 7
    assert form.parameters.reconstruction.algorithm == "ePIE"


def test_energy_typed_in_the_form_replaces_the_untouched_wavelength(client, user):
    client.force_login(user)
    assert 'name="experiment__energy_kev"' in client.get("/jobs/new/").content.decode()
    form = JobForm(form_data(small_parameters(), experiment__energy_kev="8.8"),
                   initial={"experiment__wavelength_m": display_value(small_parameters().experiment.wavelength_m)})
    assert form.is_valid(), form.errors
    assert form.parameters.experiment.wavelength_m == pytest.approx(1.40891e-10, rel=1e-5)


def test_energy_and_a_changed_wavelength_that_disagree_are_refused_under_the_energy(client, user):
    client.force_login(user)
    data = form_data(small_parameters(), experiment__energy_kev="8.8", experiment__wavelength_m="3e-10")
    response = client.post("/jobs/new/", data)
    assert response.status_code == 200 and Job.objects.count() == 0
    assert "-lambda=3e-10 m was given too" in response.context["form"].errors["experiment__energy_kev"][0]
