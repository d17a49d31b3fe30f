"""PEFT adapters in the dashboard, in real Chromium against the real stack: upload a LoRA on
a picked base, see it listed with its base, and run a path between two LoRAs in adapter space."""

from __future__ import annotations

import zipfile

import pytest

from tests.backend.conftest import zip_dir

pytestmark = pytest.mark.browser


def test_lora_upload_on_a_base_and_an_adapter_space_run_from_the_form(
        stack, store_family, lora_family, page, tmp_path, screenshots):
    archive = tmp_path / "lora_a.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in lora_family["lora_a"].iterdir():
            z.write(f, f"lora_a/{f.name}")
    page.goto(stack.base_url + "/checkpoints")
    page.set_input_files("#ckpt-upload-file", str(archive))
    page.fill("#ckpt-upload-name", "lora-a")
    # the adapter's base_model_name_or_path is a path the store does not know: pick the base
    page.wait_for_function(
        f"Array.from(document.querySelectorAll('#ckpt-upload-base option')).some(o => o.value === "
        f"'{store_family['ft_a']}')")
    page.select_option("#ckpt-upload-base", store_family["ft_a"])
    page.click("#ckpt-upload-button")
    page.locator("#ckpt-upload-status", has_text="Uploaded").wait_for()
    row = page.locator("#ckpt-table tr", has_text="lora-a")
    row.wait_for()
    assert "LORA r=4 on ft_a" in row.inner_text()
    lora_a = row.get_attribute("data-id")
    r = stack.request("PUT", f"/api/checkpoints?name=lora-b&base={store_family['ft_a']}",
                      content=zip_dir(lora_family["lora_b"]))
    assert r.status_code in (200, 201), r.text
    lora_b = r.json()["id"]

    page.goto(stack.base_url + "/")
    page.select_option("#newrun-type", "linear")
    option = page.locator(f"#newrun-ckpt-1 option[value='{lora_a}']")
    assert "LORA r=4 adapter on ft_a" in option.inner_text()
    page.select_option("#newrun-ckpt-1", lora_a)
    page.select_option("#newrun-ckpt-2", lora_b)
    page.select_option("#newrun-dataset", store_family["data"])
    page.select_option("#newrun-space", "adapter")
    page.fill("#newrun-points", "5")
    page.click("#newrun-run")
    page.wait_for_url("**/runs/*")
    run_id = page.url.rstrip("/").rsplit("/", 1)[-1]
    doc = stack.wait_run(run_id)
    assert doc["status"] == "done", doc
    assert doc["spec"]["space"] == "adapter"
    points = stack.request("GET", f"/api/runs/{run_id}/points").json()["points"]
    losses = [p["metrics"]["loss"] for p in sorted(points, key=lambda p: p["index"])]
    assert len(losses) == 5 and len(set(losses)) > 1
    page.wait_for_function("document.querySelector('#run-graphs') && "
                           "document.querySelector('#run-graphs').dataset.points === '5'")
    page.screenshot(path=str(screenshots / "adapter-run.png"), full_page=True)

    # a full checkpoint in adapter space: the API's reason on the form, no run
    page.goto(stack.base_url + "/")
    page.select_option("#newrun-type", "linear")
    page.select_option("#newrun-ckpt-1", store_family["ft_b"])
    page.select_option("#newrun-ckpt-2", lora_b)
    page.select_option("#newrun-dataset", store_family["data"])
    page.select_option("#newrun-space", "adapter")
    page.click("#newrun-check")
    page.locator("#newrun-feedback", has_text="full checkpoint").wait_for()
    assert not page.js_errors, page.js_errors
