"""SDK-style arguments to Together's create request, against the local API's model limits."""

from __future__ import annotations

from pathlib import Path

from orchestrator.localapi import LocalAPI, LocalAPIConfig, LocalTransport
from orchestrator.localapi.transport import BASE_URL
from orchestrator.providers.together.client import TogetherClient
from orchestrator.providers.together.requests import fine_tune_request
from tests.localapi.conftest import BASE


async def test_sdk_arguments_become_the_nested_request(tmp_path: Path) -> None:
    config = LocalAPIConfig(data_dir=tmp_path / "api")
    async with TogetherClient(api_key=config.api_key, base_url=BASE_URL,
                              transport=LocalTransport(LocalAPI(config))) as client:
        limits = await client.model_limits(BASE)
        lora = await fine_tune_request(client, {"model": BASE, "training_file": "file-1",
                                                "n_epochs": 2, "wandb_name": None},
                                       suffix="tok")
        dpo = await fine_tune_request(client, {
            "model": BASE, "training_file": "file-1", "lora": False, "lr_scheduler": "linear",
            "training_method": "dpo", "dpo_beta": 0.2, "rpo_alpha": None}, suffix="tok")
    rank = limits["lora_training"]["default_rank"]
    assert lora == {
        "model": BASE, "training_file": "file-1", "n_epochs": 2, "suffix": "tok",
        "lr_scheduler": {"lr_scheduler_type": "cosine",
                         "lr_scheduler_args": {"min_lr_ratio": 0.0, "num_cycles": 0.5}},
        "training_type": {"type": "Lora", "lora_r": rank, "lora_alpha": 2 * rank,
                          "lora_dropout": 0.0, "lora_trainable_modules": "all-linear"},
        "training_method": {"method": "sft", "train_on_inputs": "auto"}}
    assert dpo["training_type"] == {"type": "Full"}
    assert dpo["lr_scheduler"] == {"lr_scheduler_type": "linear",
                                   "lr_scheduler_args": {"min_lr_ratio": 0.0}}
    assert dpo["training_method"] == {"method": "dpo", "dpo_beta": 0.2}


async def test_every_sdk_argument_lands_where_the_local_api_expects_it(tmp_path: Path) -> None:
    """The builder and the local API read one table of where SDK arguments go
    (protocol.finetune.SDK_ARGUMENTS): each argument given is found at that place."""
    from orchestrator.protocol.finetune import SDK_ARGUMENTS

    given = {"lora_r": 8, "lora_alpha": 24, "lora_dropout": 0.1, "lora_trainable_modules": "q",
             "min_lr_ratio": 0.1, "scheduler_num_cycles": 2.0, "dpo_beta": 0.3,
             "rpo_alpha": 0.2, "simpo_gamma": 0.4, "dpo_normalize_logratios_by_length": True,
             "dpo_reference_free": True}
    config = LocalAPIConfig(data_dir=tmp_path / "api")
    async with TogetherClient(api_key=config.api_key, base_url=BASE_URL,
                              transport=LocalTransport(LocalAPI(config))) as client:
        request = await fine_tune_request(client, {
            "model": BASE, "training_file": "f", "training_method": "dpo",
            "lr_scheduler": "cosine", **given}, suffix="tok")
    for name, value in given.items():
        place: object = request
        for key in SDK_ARGUMENTS[name].split("."):
            assert isinstance(place, dict), (name, SDK_ARGUMENTS[name])
            place = place[key]
        assert place == value, (name, SDK_ARGUMENTS[name], place)
    assert request["lr_scheduler"]["lr_scheduler_type"] == "cosine"  # SDK: lr_scheduler_type
    assert request["training_type"]["type"] == "Lora"  # SDK: lora=True
