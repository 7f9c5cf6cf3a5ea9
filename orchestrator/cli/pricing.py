"""The price of a pipeline's fine-tunes, before they launch: shown by `plan`, held against
`budget.max_usd` by `run` (see `steps.together.pricing`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.cli.render import usd
from orchestrator.cli.session import err, out

if TYPE_CHECKING:
    from orchestrator.definition.pipeline import Pipeline
    from orchestrator.settings import Settings
    from orchestrator.steps.together.pricing import LaunchPrice

__all__ = ["budget_refusal", "estimate", "show_estimate"]




def estimate(settings: Settings, pipeline: Pipeline, inputs: Mapping[str, Any], *,
             say_uploads: bool = True) -> list[LaunchPrice]:
    """Every launch's estimate, from the provider `settings` choose (datasets it lacks are
    uploaded, as the run would, and with `say_uploads` said so on stderr)."""
    import anyio  # noqa: PLC0415

    from orchestrator.runtime import open_providers  # noqa: PLC0415
    from orchestrator.steps.together.pricing import price_launches  # noqa: PLC0415

    async def uploaded(path: Path, file_id: str) -> None:
        err(f"uploaded {path.name} as {file_id} to have it priced; the run will reuse it")

    async def priced() -> list[LaunchPrice]:
        async with open_providers(settings) as (providers, ref):
            client = await providers.client(ref)
            return await price_launches(pipeline, inputs, client,
                                        uploaded=uploaded if say_uploads else None)

    return anyio.run(priced)


def show_estimate(pipeline: Pipeline, prices: list[LaunchPrice]) -> None:
    """Each launch's price, the total, and the budget's verdict, on stdout."""
    from orchestrator.steps.together.pricing import total_usd  # noqa: PLC0415

    out("price estimate (the provider's estimate-price):")
    width = max(len(price.label) for price in prices)
    for price in prices:
        if price.usd is None:
            out(f"  {price.label:<{width}}  no estimate: {price.unknown}")
        else:
            tokens = f" ({price.tokens:,} tokens)" if price.tokens is not None else ""
            out(f"  {price.label:<{width}}  {usd(price.usd)}{tokens}")
    count = len(prices)
    line = f"  total for {count} fine-tune{'s' * (count != 1)}: {usd(total_usd(prices))}"
    unknown = sum(price.usd is None for price in prices)
    if unknown:
        line += f" and {unknown} without an estimate"
    if pipeline.budget is not None:
        verdict = budget_refusal(pipeline, prices, file=str(pipeline.path))
        line += f"; budget.max_usd {usd(pipeline.budget.max_usd)}: " + (
            "within it" if verdict is None else "run refuses it without --yes")
    out(line)


def budget_refusal(pipeline: Pipeline, prices: list[LaunchPrice], *, file: str) -> str | None:
    """Why `run` refuses these launches against the pipeline's budget (one line), or None."""
    from orchestrator.steps.together.pricing import total_usd  # noqa: PLC0415

    budget = pipeline.budget
    if budget is None:
        return None
    unknown = [price for price in prices if price.usd is None]
    if unknown:
        return (f"{file}: budget.max_usd {usd(budget.max_usd)} cannot be checked: "
                f"{unknown[0].label} has no estimate ({unknown[0].unknown}); --yes launches "
                "anyway")
    total = total_usd(prices)
    if total <= budget.max_usd:
        return None
    count = len(prices)
    return (f"{file}: the estimated price {usd(total)} of {count} fine-tune"
            f"{'s' * (count != 1)} exceeds budget.max_usd {usd(budget.max_usd)} "
            f"(orchestrator plan {file} shows each; --yes launches anyway)")
