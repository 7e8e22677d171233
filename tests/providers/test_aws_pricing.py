"""AWS prices: the shipped table, the PriceBook, parsing GetProducts, and the refresher.

The refresher is driven through real aiobotocore clients against ``fake_aws_pricing`` (moto has
no Pricing API, and its spot price history is one constant); retries sleep through a recording
fake, and the 12-hour loop runs on a FakeClock, so nothing waits for real time.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import botocore.session
import pytest
from aiobotocore.session import get_session
from botocore.config import Config
from fake_aws_pricing import FakeAwsPricing, SpotRecord, ec2_product
from hypothesis import given
from hypothesis import strategies as st
from shoal.providers.aws_pricing import (
    DEFAULT_FAILURE_RETRY,
    DEFAULT_REFRESH_INTERVAL,
    SOURCE_PRICING_API,
    SOURCE_SPOT_HISTORY,
    SOURCE_TABLE,
    MalformedPriceError,
    Price,
    PriceBook,
    PriceTable,
    PricingRefresher,
    load_price_table,
    parse_price_list_item,
    pricing_endpoint_region,
    refresh,
)
from shoal.providers.retry import RetryPolicy
from shoal.runtime.testing import FakeClock

MAIN_REGIONS = (
    "us-east-1",
    "us-east-2",
    "us-west-2",
    "eu-west-1",
    "eu-central-1",
    "ap-south-1",
    "ap-northeast-1",
    "ap-southeast-2",
)
CATALOGUE = json.loads(
    resources.files("shoal.providers.catalogue").joinpath("instance_types.json").read_text()
)["instance_types"]
NOW = datetime(2026, 11, 27, 6, 0, tzinfo=UTC)
TYPES = ["c5.large", "m5.large", "m5.xlarge"]


# -- the shipped table ---------------------------------------------------------------------


def test_the_table_prices_every_catalogue_type_in_the_main_regions() -> None:
    table = load_price_table()
    missing = [(r, t) for r in MAIN_REGIONS for t in CATALOGUE if t not in table.prices(r)]
    assert missing == []
    assert table.as_of == "2026-11-27"
    assert "skypilot" in table.source


def test_the_table_agrees_with_the_catalogue_in_us_east_1() -> None:
    """instance_types.json carries us-east-1 list prices too; the two must not drift apart."""
    table = load_price_table()
    differ = {
        t: (table.prices("us-east-1")[t], spec["on_demand_price"])
        for t, spec in CATALOGUE.items()
        if not math.isclose(table.prices("us-east-1")[t], spec["on_demand_price"])
    }
    assert differ == {}


@pytest.mark.parametrize("region", MAIN_REGIONS)
def test_table_prices_scale_with_size_within_a_family(region: str) -> None:
    """Within a family, price per vCPU (per GiB for burstable t3) is constant, as AWS prices
    them: a mistyped price in the table breaks this (GPU families price the GPU, so skipped)."""
    prices = load_price_table().prices(region)
    per_unit: dict[str, set[float]] = {}
    for t, spec in CATALOGUE.items():
        family = t.split(".")[0]
        if spec["gpus"]:
            continue
        unit = spec["memory_gib"] if family == "t3" else spec["cores"]
        per_unit.setdefault(family, set()).add(round(prices[t] / unit, 6))
    assert {f: sorted(v) for f, v in per_unit.items() if len(v) != 1} == {}


@pytest.mark.parametrize("region", MAIN_REGIONS[1:])
def test_table_regional_prices_are_near_us_east_1(region: str) -> None:
    table = load_price_table()
    ratios = {t: table.prices(region)[t] / table.prices("us-east-1")[t] for t in CATALOGUE}
    assert {t: r for t, r in ratios.items() if not 0.5 <= r <= 1.5} == {}


@pytest.mark.parametrize(
    ("body", "error"),
    [
        pytest.param(
            {"as_of": "2026-11-27", "regions": {"r": {"t": 0}}}, "not positive", id="zero"
        ),
        pytest.param(
            {"as_of": "2026-11-27", "regions": {"r": {"t": -1}}}, "not positive", id="neg"
        ),
        pytest.param({"as_of": "yesterday", "regions": {}}, "isoformat", id="bad-date"),
    ],
)
def test_a_bad_table_is_refused(tmp_path: Any, body: dict[str, Any], error: str) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(body))
    with pytest.raises(ValueError, match=error):
        load_price_table(path)


# -- endpoint region -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "endpoint"),
    [
        pytest.param("us-east-1", "us-east-1", id="us-east-1"),
        pytest.param("us-west-2", "us-east-1", id="us-west-2"),
        pytest.param("ca-central-1", "us-east-1", id="ca-central-1"),
        pytest.param("sa-east-1", "us-east-1", id="sa-east-1"),
        pytest.param("me-central-1", "us-east-1", id="me-central-1"),
        pytest.param("eu-west-1", "eu-central-1", id="eu-west-1"),
        pytest.param("eu-central-1", "eu-central-1", id="eu-central-1"),
        pytest.param("eu-north-1", "eu-central-1", id="eu-north-1"),
        pytest.param("ap-south-1", "ap-south-1", id="ap-south-1"),
        pytest.param("ap-northeast-1", "ap-south-1", id="ap-northeast-1"),
        pytest.param("ap-southeast-2", "ap-south-1", id="ap-southeast-2"),
        pytest.param("cn-north-1", None, id="china-prices-in-cny"),
        pytest.param("us-gov-west-1", None, id="govcloud"),
        pytest.param("us-iso-east-1", None, id="iso"),
        pytest.param("eu-isoe-west-1", None, id="iso-e"),
    ],
)
def test_pricing_endpoint_region(region: str, endpoint: str | None) -> None:
    assert pricing_endpoint_region(region) == endpoint


def test_every_chosen_endpoint_is_one_botocore_knows_for_the_pricing_api() -> None:
    session = botocore.session.get_session()
    known = {
        r
        for partition in session.get_available_partitions()
        for r in session.get_available_regions("pricing", partition)
    }
    chosen = {pricing_endpoint_region(r) for r in MAIN_REGIONS}
    assert chosen <= known


# -- parsing -------------------------------------------------------------------------------


def test_parse_a_real_shaped_product() -> None:
    product = ec2_product("m5.xlarge", "us-east-1", "0.1920000000", reserved_usd_per_hour="0.121")
    assert parse_price_list_item(json.dumps(product), region="us-east-1") == ("m5.xlarge", 0.192)


def _dimension(product: dict[str, Any]) -> dict[str, Any]:
    term = next(iter(product["terms"]["OnDemand"].values()))
    return next(iter(term["priceDimensions"].values()))


def _malformed_cases() -> list[Any]:
    good = ec2_product("m5.large", "us-east-1", "0.0960000000")
    zero = json.loads(json.dumps(good))
    _dimension(zero)["pricePerUnit"]["USD"] = "0.0000000000"
    text = json.loads(json.dumps(good))
    _dimension(text)["pricePerUnit"]["USD"] = "n/a"
    no_usd = json.loads(json.dumps(good))
    _dimension(no_usd)["pricePerUnit"] = {"CNY": "0.7"}
    monthly = json.loads(json.dumps(good))
    _dimension(monthly)["unit"] = "Quantity"
    two = json.loads(json.dumps(good))
    term = next(iter(two["terms"]["OnDemand"].values()))
    term["priceDimensions"]["extra"] = {"unit": "Hrs", "pricePerUnit": {"USD": "0.5"}}
    no_terms = json.loads(json.dumps(good))
    no_terms["terms"] = {"Reserved": {}}
    no_type = json.loads(json.dumps(good))
    del no_type["product"]["attributes"]["instanceType"]
    return [
        pytest.param("{not json", id="not-json"),
        pytest.param('["a list"]', id="not-an-object"),
        pytest.param(
            ec2_product("m5.large", "us-east-1", "0.188", operatingSystem="Windows"), id="windows"
        ),
        pytest.param(
            ec2_product("m5.large", "us-east-1", "0.106", tenancy="Dedicated"), id="dedicated"
        ),
        pytest.param(
            ec2_product("m5.large", "us-east-1", "0.2", preInstalledSw="SQL Web"), id="sql"
        ),
        pytest.param(
            ec2_product("m5.large", "us-east-1", "0.0", capacitystatus="UnusedCapacityReservation"),
            id="reservation",
        ),
        pytest.param(ec2_product("m5.large", "eu-west-1", "0.107"), id="other-region"),
        pytest.param(zero, id="zero-price"),
        pytest.param(text, id="price-not-a-number"),
        pytest.param(no_usd, id="no-usd"),
        pytest.param(monthly, id="no-hourly-dimension"),
        pytest.param(two, id="two-hourly-prices"),
        pytest.param(no_terms, id="no-on-demand-terms"),
        pytest.param(no_type, id="no-instance-type"),
    ]


@pytest.mark.parametrize("item", _malformed_cases())
def test_parse_refuses_what_is_not_a_linux_shared_on_demand_price(item: Any) -> None:
    text = item if isinstance(item, str) else json.dumps(item)
    with pytest.raises(MalformedPriceError):
        parse_price_list_item(text, region="us-east-1")


@given(st.decimals(min_value="0.0001", max_value="500", places=10))
def test_parse_reads_the_price_as_written(price: Any) -> None:
    product = ec2_product("r5.large", "us-east-1", f"{price:.10f}")
    assert parse_price_list_item(json.dumps(product)) == ("r5.large", float(f"{price:.10f}"))


# -- the book ------------------------------------------------------------------------------


def test_a_book_starts_from_the_table_and_knows_what_it_does_not_know() -> None:
    book = PriceBook("eu-west-1")
    assert book.on_demand("m5.xlarge") == 0.214
    price = book.on_demand_price("m5.xlarge")
    assert price is not None and price.source == SOURCE_TABLE
    assert price.as_of == datetime(2026, 11, 27, tzinfo=UTC).timestamp()
    assert book.on_demand("m7z.huge") is None  # not in the table
    assert book.spot("m5.xlarge", "eu-west-1a") is None  # no spot price before a refresh
    assert book.spot_or_on_demand("m5.xlarge", "eu-west-1a") == 0.214
    assert book.missing_on_demand(["m5.large", "m7z.huge", "c5.large"]) == ["m7z.huge"]


def test_a_region_the_table_lacks_has_no_prices_not_another_regions() -> None:
    book = PriceBook("sa-east-1")
    assert book.on_demand("m5.xlarge") is None
    assert book.missing_on_demand(["m5.xlarge"]) == ["m5.xlarge"]


def test_replace_spot_drops_zones_no_longer_priced_for_the_types_it_covers() -> None:
    book = PriceBook("us-east-1", PriceTable("2026-01-01", "test", {}))
    book.replace_spot(
        ["m5.large", "c5.large"],
        {
            ("m5.large", "us-east-1a"): Price(0.03, SOURCE_SPOT_HISTORY, 1.0),
            ("m5.large", "us-east-1c"): Price(0.04, SOURCE_SPOT_HISTORY, 1.0),
            ("c5.large", "us-east-1a"): Price(0.02, SOURCE_SPOT_HISTORY, 1.0),
        },
    )
    book.replace_spot(
        ["m5.large"], {("m5.large", "us-east-1a"): Price(0.05, SOURCE_SPOT_HISTORY, 2.0)}
    )
    assert book.spot("m5.large", "us-east-1a") == 0.05
    assert book.spot("m5.large", "us-east-1c") is None
    assert book.spot("c5.large", "us-east-1a") == 0.02  # not covered: kept


# -- the refresher against the fake endpoint -------------------------------------------------


@dataclass
class Env:
    fake: FakeAwsPricing
    ec2: Any
    pricing: Any
    sleeps: list[float] = field(default_factory=list)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    async def refresh(self, book: PriceBook, **kwargs: Any) -> Any:
        kwargs.setdefault("instance_types", TYPES)
        return await refresh(
            book,
            ec2=kwargs.pop("ec2", self.ec2),
            pricing=kwargs.pop("pricing", self.pricing),
            now=kwargs.pop("now", NOW.timestamp()),
            retry_policy=RetryPolicy(attempts=3, initial=1.0, maximum=2.0),
            sleep=self.sleep,
            **kwargs,
        )


def _spot_history() -> list[SpotRecord]:
    h = timedelta(hours=1)
    return [
        SpotRecord("m5.large", "us-east-1a", "0.034100", NOW - 30 * h),
        SpotRecord("m5.large", "us-east-1a", "0.035200", NOW - 2 * h),  # in effect now
        SpotRecord("m5.large", "us-east-1b", "0.031700", NOW - 7 * h),
        SpotRecord("m5.large", "us-east-1b", "0.090000", NOW - 7 * h, "Windows"),
        SpotRecord("m5.xlarge", "us-east-1a", "0.069800", NOW - 3 * h),
        SpotRecord("m5.xlarge", "us-east-1f", "0.061200", NOW - 26 * h),
        SpotRecord("c5.large", "us-east-1c", "0.034300", NOW - 1 * h),
        SpotRecord("r5.large", "us-east-1a", "0.044500", NOW - 1 * h),  # not asked for
    ]


def _products(region: str = "us-east-1") -> list[dict[str, Any]]:
    return [
        ec2_product("m5.large", region, "0.0980000000", reserved_usd_per_hour="0.0600000000"),
        ec2_product("m5.xlarge", region, "0.1960000000"),
        ec2_product("c5.large", region, "0.0870000000"),
        ec2_product("m5.large", region, "0.1900000000", operatingSystem="Windows"),
        ec2_product("m5.large", region, "0.1130000000", tenancy="Dedicated"),
        ec2_product("m5.large", "eu-west-1", "0.1070000000"),
    ]


@pytest.fixture
async def env(aws_env: None) -> AsyncIterator[Env]:
    fake = FakeAwsPricing()
    url = await fake.start()
    fake.set_products(_products())
    fake.spot = _spot_history()
    session = get_session()
    config = Config(retries={"total_max_attempts": 1, "mode": "standard"})  # ours retry
    try:
        async with (
            session.create_client(
                "ec2", region_name="us-east-1", endpoint_url=url, config=config
            ) as ec2,
            session.create_client(
                "pricing", region_name="us-east-1", endpoint_url=url, config=config
            ) as pricing,
        ):
            yield Env(fake, ec2, pricing)
    finally:
        await fake.stop()


async def test_a_refresh_replaces_table_prices_with_the_apis(env: Env) -> None:
    book = PriceBook("us-east-1")
    result = await env.refresh(book)

    assert result.ok and result.malformed == 0
    assert result.on_demand_updated == ("c5.large", "m5.large", "m5.xlarge")
    assert (book.on_demand("m5.large"), book.on_demand("m5.xlarge")) == (0.098, 0.196)
    assert book.on_demand_price("m5.large") == Price(0.098, SOURCE_PRICING_API, NOW.timestamp())
    assert book.on_demand("t3.large") == 0.0832  # not asked for: still the table's
    assert book.spot("m5.large", "us-east-1a") == 0.0352  # the price in effect, not the older
    assert book.spot("m5.large", "us-east-1b") == 0.0317  # Linux, not the Windows record
    assert book.spot("m5.xlarge", "us-east-1f") == 0.0612
    assert book.spot_price("c5.large", "us-east-1c") == Price(
        0.0343, SOURCE_SPOT_HISTORY, (NOW - timedelta(hours=1)).timestamp()
    )
    assert book.spot("r5.large", "us-east-1a") is None
    assert result.spot_updated == 5


async def test_the_requests_ask_for_linux_shared_on_demand_in_the_books_region(env: Env) -> None:
    await env.refresh(PriceBook("eu-west-1"), instance_types=["m5.large"])

    (products,) = env.fake.calls("GetProducts")
    assert products["ServiceCode"] == "AmazonEC2"
    assert {f["Field"]: f["Value"] for f in products["Filters"]} == {
        "regionCode": "eu-west-1",
        "instanceType": "m5.large",
        "operatingSystem": "Linux",
        "tenancy": "Shared",
        "preInstalledSw": "NA",
        "capacitystatus": "Used",
        "marketoption": "OnDemand",
    }
    assert {f["Type"] for f in products["Filters"]} == {"TERM_MATCH"}
    (spot,) = env.fake.calls("DescribeSpotPriceHistory")
    assert spot["StartTime"] == "2026-11-27T06:00:00Z"
    assert (spot["ProductDescription.1"], spot["ProductDescription.2"]) == (
        "Linux/UNIX",
        "Linux/UNIX (Amazon VPC)",
    )
    assert spot["InstanceType.1"] == "m5.large"


async def test_every_page_is_read(env: Env) -> None:
    """The services may return fewer items than asked for; NextToken leads to the rest."""
    env.fake.page_limit = 2
    env.fake.set_products(
        [ec2_product(t, "us-east-1", f"0.{i + 1}00") for i, t in enumerate(CATALOGUE)][:5]
    )
    book = PriceBook("us-east-1", PriceTable("2026-01-01", "test", {}))
    result = await env.refresh(book, instance_types=None)  # every type: one query, 3 pages

    assert len(env.fake.calls("GetProducts")) == 3
    assert [book.on_demand(t) for t in list(CATALOGUE)[:5]] == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert len(env.fake.calls("DescribeSpotPriceHistory")) == 3  # 6 Linux prices, 2 a page
    assert book.spot("r5.large", "us-east-1a") == 0.0445  # asked for every type this time
    assert book.spot("m5.large", "us-east-1a") == 0.0352
    assert result.ok and result.spot_updated == 6


async def test_the_latest_spot_price_wins_whatever_page_it_is_on(env: Env) -> None:
    h = timedelta(hours=1)
    env.fake.page_limit = 1
    env.fake.spot = [
        SpotRecord("m5.large", "us-east-1a", "0.0400", NOW + 1 * h),
        SpotRecord("m5.large", "us-east-1a", "0.0300", NOW - 5 * h),
        SpotRecord("m5.large", "us-east-1a", "0.0500", NOW + 2 * h),
    ]
    book = PriceBook("us-east-1")
    await env.refresh(book, instance_types=["m5.large"], pricing=None)
    assert book.spot("m5.large", "us-east-1a") == 0.05


# The price refresh and the provisioner share one code table (providers.aws_errors): each
# throttling code, whichever API spells it, is retried on both of the refresh's APIs.
@pytest.mark.parametrize(
    "code", ["RequestLimitExceeded", "EC2ThrottledException", "ThrottlingException", "Throttling"]
)
async def test_a_pricing_throttle_is_retried_like_an_ec2_one(env: Env, code: str) -> None:
    env.fake.fail_next("GetProducts", code, times=2)
    env.fake.fail_next("DescribeSpotPriceHistory", code)
    book = PriceBook("us-east-1")
    result = await env.refresh(book, instance_types=["m5.large"])

    assert result.ok, (result.on_demand_errors, result.spot_errors)
    assert (book.on_demand("m5.large"), book.spot("m5.large", "us-east-1a")) == (0.098, 0.0352)
    assert len(env.fake.calls("GetProducts")) == 3
    assert len(env.fake.calls("DescribeSpotPriceHistory")) == 2
    assert len(env.sleeps) == 3  # each retry waited, through the injected sleep


async def test_a_failed_query_keeps_the_last_good_prices(env: Env) -> None:
    book = PriceBook("us-east-1")
    assert (await env.refresh(book)).ok
    env.fake.set_products(
        [
            ec2_product("c5.large", "us-east-1", "0.0900000000"),
            ec2_product("m5.large", "us-east-1", "0.1000000000"),
            ec2_product("m5.xlarge", "us-east-1", "0.2000000000"),
        ]
    )
    env.fake.spot = [SpotRecord("m5.large", "us-east-1a", "0.0990", NOW)]
    # c5.large is asked first (sorted): it is throttled past its retries; spot is refused.
    env.fake.fail_next("GetProducts", "ThrottlingException", times=3)
    env.fake.fail_next("DescribeSpotPriceHistory", "UnauthorizedOperation")

    result = await env.refresh(book)

    assert not result.ok and not result.on_demand_ok and not result.spot_ok
    assert result.on_demand_errors[0].startswith("c5.large: GetProducts")
    assert "UnauthorizedOperation" in result.spot_errors[0]
    assert book.on_demand("c5.large") == 0.087  # last good, from the first refresh
    assert (book.on_demand("m5.large"), book.on_demand("m5.xlarge")) == (0.1, 0.2)
    assert book.spot("m5.large", "us-east-1a") == 0.0352  # last good
    assert len(env.fake.calls("DescribeSpotPriceHistory")) == 2  # 403 is not retried


async def test_a_malformed_product_is_skipped_and_counted(env: Env) -> None:
    env.fake.add_raw("m5.large", "us-east-1", '{"product": {"attributes": {"instanceType": ')
    env.fake.add_raw("c5.large", "us-east-1", json.dumps({"product": {}, "terms": {}}))
    env.fake.set_products([p for p in _products() if "c5.large" not in json.dumps(p)])
    book = PriceBook("us-east-1")
    result = await env.refresh(book)

    assert result.malformed == 2
    assert book.on_demand("m5.large") == 0.098  # its good product still counts
    assert result.on_demand_not_found == ("c5.large",)
    assert book.on_demand_price("c5.large") == Price(
        0.085, SOURCE_TABLE, datetime(2026, 11, 27, tzinfo=UTC).timestamp()
    )
    assert result.ok  # a product AWS does not have is not a failed refresh


async def test_an_unknown_type_stays_unknown(env: Env) -> None:
    book = PriceBook("us-east-1")
    result = await env.refresh(book, instance_types=["m5.large", "x9.mega"])
    assert book.on_demand("x9.mega") is None
    assert book.spot("x9.mega", "us-east-1a") is None
    assert result.on_demand_not_found == ("x9.mega",)


async def test_an_empty_answer_is_a_failure(env: Env) -> None:
    env.fake.set_products([])
    env.fake.spot = []
    book = PriceBook("us-east-1")
    result = await env.refresh(book)
    assert not result.on_demand_ok and not result.spot_ok
    assert book.on_demand("m5.large") == 0.096  # the table's, kept


async def test_a_half_without_a_client_is_skipped(env: Env) -> None:
    book = PriceBook("us-east-1")
    result = await env.refresh(book, pricing=None)
    assert result.ok and result.on_demand_skipped and not result.spot_skipped
    assert env.fake.calls("GetProducts") == []
    price = book.on_demand_price("m5.large")
    assert price is not None and price.source == SOURCE_TABLE


# -- the loop ------------------------------------------------------------------------------


class WatchedClock(FakeClock):
    """A FakeClock that tells a test when a coroutine has gone to sleep, and for how long."""

    def __init__(self) -> None:
        super().__init__(start=NOW.timestamp())
        self.sleep_calls: list[float] = []
        self._asleep = asyncio.Condition()

    async def sleep(self, seconds: float) -> None:
        self.sleep_calls.append(seconds)
        async with self._asleep:
            self._asleep.notify_all()
        await super().sleep(seconds)

    async def slept(self, count: int) -> list[float]:
        """Wait until ``sleep`` has been called ``count`` times in all."""
        async with self._asleep:
            await self._asleep.wait_for(lambda: len(self.sleep_calls) >= count)
        return self.sleep_calls


async def test_the_loop_refreshes_at_start_and_every_12_hours(env: Env) -> None:
    clock = WatchedClock()
    book = PriceBook("us-east-1")
    refresher = PricingRefresher(
        book, ec2=env.ec2, pricing=env.pricing, instance_types=TYPES, clock=clock
    )
    task = asyncio.create_task(refresher.run())
    try:
        stats = await asyncio.wait_for(refresher.wait_for_attempts(1), 30)
        assert stats.attempts == 1 and stats.failures == 0
        assert stats.last_success_at == NOW.timestamp()
        assert book.on_demand("m5.large") == 0.098
        assert await asyncio.wait_for(clock.slept(1), 30) == [DEFAULT_REFRESH_INTERVAL]
        assert DEFAULT_REFRESH_INTERVAL == 12 * 3600

        env.fake.set_products([ec2_product("m5.large", "us-east-1", "0.0990000000")])
        await clock.advance(DEFAULT_REFRESH_INTERVAL - 1)
        assert len(env.fake.calls("GetProducts")) == len(TYPES)  # not yet
        await clock.advance(1)
        stats = await asyncio.wait_for(refresher.wait_for_attempts(2), 30)
        assert len(env.fake.calls("GetProducts")) == 2 * len(TYPES)
        assert book.on_demand("m5.large") == 0.099
        assert stats.last_success_at == NOW.timestamp() + DEFAULT_REFRESH_INTERVAL
        assert await asyncio.wait_for(clock.slept(2), 30) == [DEFAULT_REFRESH_INTERVAL] * 2
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_after_a_failure_the_loop_retries_sooner_and_counts_it(env: Env) -> None:
    clock = WatchedClock()
    book = PriceBook("us-east-1")
    refresher = PricingRefresher(
        book,
        ec2=env.ec2,
        pricing=env.pricing,
        instance_types=TYPES,
        clock=clock,
        retry_policy=RetryPolicy(attempts=1),
    )
    env.fake.fail_next("DescribeSpotPriceHistory", "UnauthorizedOperation")
    task = asyncio.create_task(refresher.run())
    try:
        stats = await asyncio.wait_for(refresher.wait_for_attempts(1), 30)
        assert (stats.failures, stats.spot_failures, stats.on_demand_failures) == (1, 1, 0)
        assert stats.last_success_at is None
        assert book.on_demand("m5.large") == 0.098  # the half that worked was kept
        assert await asyncio.wait_for(clock.slept(1), 30) == [DEFAULT_FAILURE_RETRY]

        await clock.advance(DEFAULT_FAILURE_RETRY)
        stats = await asyncio.wait_for(refresher.wait_for_attempts(2), 30)
        assert (stats.attempts, stats.failures) == (2, 1)
        assert book.spot("m5.large", "us-east-1a") == 0.0352
        assert await asyncio.wait_for(clock.slept(2), 30) == [
            DEFAULT_FAILURE_RETRY,
            DEFAULT_REFRESH_INTERVAL,
        ]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_crash_in_a_refresh_is_counted_not_fatal() -> None:
    class Broken:
        async def get_products(self, **_: Any) -> dict[str, Any]:
            return {"PriceList": None}  # not a list: a bug-shaped answer

    clock = WatchedClock()
    refresher = PricingRefresher(
        PriceBook("us-east-1"), ec2=None, pricing=Broken(), instance_types=["m5.large"], clock=clock
    )
    task = asyncio.create_task(refresher.run())
    try:
        stats = await asyncio.wait_for(refresher.wait_for_attempts(1), 30)
        assert stats.failures == 1 and stats.on_demand_failures == 1
        assert await asyncio.wait_for(clock.slept(1), 30) == [DEFAULT_FAILURE_RETRY]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
