"""Prices of AWS instance types, kept as Karpenter keeps them.

- A shipped table, ``catalogue/aws_prices.json``: on-demand USD/hour (Linux, shared tenancy, no
  pre-installed software, capacity status Used) per region and instance type, with its as-of
  date and sources. ``load_price_table`` reads it.
- ``PriceBook``: the prices one region's provisioner plans with. On-demand prices per type and
  spot prices per (type, zone), each a ``Price`` that says where it came from and when. It
  starts from the shipped table; a price nobody has is ``None``: unknown, never guessed (no
  fallback to another region's table, no spot price made up from the on-demand one unless the
  caller asks for it with ``spot_or_on_demand``).
- ``refresh``: one refresh through aiobotocore clients the caller owns. On-demand prices come
  from the Pricing API's ``GetProducts`` (service ``AmazonEC2``, one query per instance type,
  every page); spot prices from EC2 ``DescribeSpotPriceHistory`` (Linux/UNIX, ``StartTime`` =
  now, every page, the latest price per type and zone). Each query is all or nothing: a query
  that fails after its retries changes nothing, so the book keeps its last good prices, and
  the failure is reported in the ``RefreshResult``. A malformed product is skipped and counted.
- ``PricingRefresher``: refreshes at start and then every 12 hours (sooner after a failure) on
  an injected ``Clock``, and counts attempts and failures for the daemon's metrics.

``pricing_endpoint_region`` picks the Pricing API endpoint for an EC2 region. Any endpoint
answers for every region (the region is a filter); the choice only keeps the call near.
Errors: botocore errors become ``providers.errors`` through ``providers.aws_errors``, the same
code table the provisioner's EC2 calls use (throttling, 5xx and transport errors are retried
with ``call_with_retry``); this module does not import ``providers.aws`` so that the
provisioner can import it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from shoal.providers.aws_errors import translate_error
from shoal.providers.errors import ProviderError, is_retryable
from shoal.providers.retry import RetryPolicy, call_with_retry
from shoal.runtime.clock import Clock, SystemClock

__all__ = [
    "DEFAULT_FAILURE_RETRY",
    "DEFAULT_REFRESH_INTERVAL",
    "ON_DEMAND_ATTRIBUTES",
    "SOURCE_PRICING_API",
    "SOURCE_SPOT_HISTORY",
    "SOURCE_TABLE",
    "SPOT_PRODUCT_DESCRIPTIONS",
    "MalformedPriceError",
    "Price",
    "PriceBook",
    "PriceTable",
    "PricingRefresher",
    "RefreshResult",
    "RefreshStats",
    "load_price_table",
    "parse_price_list_item",
    "pricing_endpoint_region",
    "refresh",
]

log = logging.getLogger(__name__)

PRICE_TABLE_RESOURCE = "aws_prices.json"
DEFAULT_REFRESH_INTERVAL = 12 * 3600.0  # as Karpenter: the Pricing API changes rarely
DEFAULT_FAILURE_RETRY = 15 * 60.0  # after a failed refresh, try again sooner than 12 h
DEFAULT_RETRY_POLICY = RetryPolicy(attempts=4, initial=1.0, maximum=20.0, deadline=120.0)

SOURCE_TABLE = "table"
SOURCE_PRICING_API = "aws-pricing-api"
SOURCE_SPOT_HISTORY = "ec2-spot-price-history"

#: The product attributes an on-demand price must have, sent as GetProducts TERM_MATCH filters
#: and checked again on every product that comes back.
ON_DEMAND_ATTRIBUTES: Mapping[str, str] = {
    "operatingSystem": "Linux",
    "tenancy": "Shared",
    "preInstalledSw": "NA",
    "capacitystatus": "Used",
    "marketoption": "OnDemand",
}
#: Spot price history product descriptions that are Linux (the second one is EC2-Classic era
#: wording that EC2 still answers for some accounts).
SPOT_PRODUCT_DESCRIPTIONS = ("Linux/UNIX", "Linux/UNIX (Amazon VPC)")
GET_PRODUCTS_PAGE = 100  # GetProducts' MaxResults is 1..100
SPOT_HISTORY_PAGE = 1000


def pricing_endpoint_region(region: str) -> str | None:
    """The region whose Pricing API endpoint serves ``region``'s prices, or None if none does.

    The Pricing API of the commercial partition has endpoints in us-east-1, eu-central-1 and
    ap-south-1; each answers for every region. As Karpenter does, Asia Pacific regions use
    ap-south-1, European ones eu-central-1, the rest us-east-1. Regions of the other partitions
    get None: GovCloud, ISO and European Sovereign Cloud have no endpoint shoal can reach with
    commercial credentials, and China's (cn-northwest-1) prices in CNY, which a book in USD
    must not mix in; their prices stay as the table has them (none).
    """
    if region.startswith(("us-gov-", "us-iso", "eu-iso", "eusc-", "cn-")):
        return None
    if region.startswith("ap-"):
        return "ap-south-1"
    if region.startswith("eu-"):
        return "eu-central-1"
    return "us-east-1"


# -- the shipped table ---------------------------------------------------------------------


@dataclass(frozen=True)
class PriceTable:
    """On-demand USD/hour per region and instance type, with when and where they came from."""

    as_of: str  # ISO date
    source: str
    regions: Mapping[str, Mapping[str, float]]

    @property
    def as_of_epoch(self) -> float:
        """``as_of`` as seconds since the epoch (midnight UTC)."""
        d = date.fromisoformat(self.as_of)
        return datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()

    def prices(self, region: str) -> Mapping[str, float]:
        """The region's prices; empty if the table has no such region."""
        return self.regions.get(region, {})


def load_price_table(path: str | Path | None = None) -> PriceTable:
    """Read a price table (by default the one shipped with shoal) and check every price."""
    if path is None:
        text = (
            resources.files("shoal.providers.catalogue")
            .joinpath(PRICE_TABLE_RESOURCE)
            .read_text(encoding="utf-8")
        )
    else:
        text = Path(path).read_text(encoding="utf-8")
    raw = json.loads(text)
    as_of = str(raw["as_of"])
    date.fromisoformat(as_of)  # a date, or ValueError
    regions: dict[str, dict[str, float]] = {}
    for region, prices in dict(raw["regions"]).items():
        checked: dict[str, float] = {}
        for instance_type, value in dict(prices).items():
            price = float(value)
            if not math.isfinite(price) or price <= 0:
                raise ValueError(f"{region} {instance_type}: price {value!r} is not positive")
            checked[str(instance_type)] = price
        regions[str(region)] = checked
    return PriceTable(as_of=as_of, source=str(raw.get("source", "")), regions=regions)


# -- the price book ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Price:
    """One price: USD per instance-hour, where it came from, and as of when (epoch seconds:
    the table's date, the time of the Pricing API answer, or the spot price's timestamp)."""

    usd_per_hour: float
    source: str
    as_of: float


class PriceBook:
    """On-demand prices per instance type and spot prices per (type, zone) for one region."""

    def __init__(self, region: str, table: PriceTable | None = None) -> None:
        self.region = region
        self.table = load_price_table() if table is None else table
        as_of = self.table.as_of_epoch
        self._on_demand: dict[str, Price] = {
            t: Price(v, SOURCE_TABLE, as_of) for t, v in self.table.prices(region).items()
        }
        self._spot: dict[str, dict[str, Price]] = {}
        if not self._on_demand:
            log.warning("event=price_table_missing_region region=%s", region)

    # reading

    def on_demand(self, instance_type: str) -> float | None:
        """USD/hour on demand, or None when no price is known."""
        price = self._on_demand.get(instance_type)
        return None if price is None else price.usd_per_hour

    def spot(self, instance_type: str, zone: str) -> float | None:
        """The latest spot USD/hour in ``zone`` (a zone name, e.g. us-east-1a), or None."""
        price = self._spot.get(instance_type, {}).get(zone)
        return None if price is None else price.usd_per_hour

    def spot_or_on_demand(self, instance_type: str, zone: str) -> float | None:
        """The spot price, else the on-demand price as its upper bound (what Karpenter assumes
        before its first spot refresh), else None."""
        spot = self.spot(instance_type, zone)
        return spot if spot is not None else self.on_demand(instance_type)

    def on_demand_price(self, instance_type: str) -> Price | None:
        return self._on_demand.get(instance_type)

    def spot_price(self, instance_type: str, zone: str) -> Price | None:
        return self._spot.get(instance_type, {}).get(zone)

    def missing_on_demand(self, instance_types: Iterable[str]) -> list[str]:
        """The given types without an on-demand price, in the order given (for config checks)."""
        return [t for t in instance_types if t not in self._on_demand]

    # writing (the refresher's)

    def update_on_demand(self, prices: Mapping[str, Price]) -> None:
        """Replace the on-demand prices of these types; other types keep theirs."""
        self._on_demand.update(prices)

    def replace_spot(
        self, instance_types: Iterable[str], prices: Mapping[tuple[str, str], Price]
    ) -> None:
        """Make ``prices`` the whole spot picture of ``instance_types``: a zone that no longer
        has a price for one of them loses its old one. Other types are left alone."""
        for instance_type in instance_types:
            self._spot.pop(instance_type, None)
        for (instance_type, zone), price in prices.items():
            self._spot.setdefault(instance_type, {})[zone] = price


# -- parsing -------------------------------------------------------------------------------


class MalformedPriceError(ValueError):
    """A GetProducts product or spot price record that is not a usable price."""


def _positive_price(text: Any, what: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise MalformedPriceError(f"{what}: {text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise MalformedPriceError(f"{what}: {text!r} is not a positive price")
    return value


def parse_price_list_item(
    item: str | Mapping[str, Any], *, region: str | None = None, currency: str = "USD"
) -> tuple[str, float]:
    """(instance type, price per hour) from one ``GetProducts`` PriceList entry.

    The entry is the JSON text the API returns (``{"product": {"attributes": ...},
    "terms": {"OnDemand": {term: {"priceDimensions": {rate: {"unit": "Hrs",
    "pricePerUnit": {"USD": "0.1920000000"}}}}}, "Reserved": ...}}``). The product must be a
    Linux, shared-tenancy, on-demand instance (``ON_DEMAND_ATTRIBUTES``) in ``region`` when
    given, and its on-demand terms must name exactly one positive hourly price; reserved terms
    are ignored. Anything else raises ``MalformedPriceError``.
    """
    try:
        doc = json.loads(item) if isinstance(item, str) else item
        attributes = doc["product"]["attributes"]
        on_demand_terms = doc["terms"]["OnDemand"]
    except (ValueError, TypeError, KeyError) as e:
        raise MalformedPriceError(f"not a GetProducts product: {e!r}") from None
    if not isinstance(attributes, Mapping) or not isinstance(on_demand_terms, Mapping):
        raise MalformedPriceError("product attributes or on-demand terms are not objects")
    instance_type = attributes.get("instanceType")
    if not isinstance(instance_type, str) or not instance_type:
        raise MalformedPriceError("product has no instanceType")
    for name, wanted in ON_DEMAND_ATTRIBUTES.items():
        if attributes.get(name) != wanted:
            raise MalformedPriceError(
                f"{instance_type}: {name} is {attributes.get(name)!r}, not {wanted!r}"
            )
    if region is not None and attributes.get("regionCode") != region:
        raise MalformedPriceError(
            f"{instance_type}: regionCode is {attributes.get('regionCode')!r}, not {region!r}"
        )
    prices: set[float] = set()
    for term in on_demand_terms.values():
        dimensions = term.get("priceDimensions") if isinstance(term, Mapping) else None
        if not isinstance(dimensions, Mapping):
            raise MalformedPriceError(f"{instance_type}: an on-demand term has no priceDimensions")
        for dimension in dimensions.values():
            if not isinstance(dimension, Mapping) or dimension.get("unit") != "Hrs":
                continue
            per_unit = dimension.get("pricePerUnit")
            amount = per_unit.get(currency) if isinstance(per_unit, Mapping) else None
            prices.add(_positive_price(amount, f"{instance_type} {currency}/Hrs"))
    if len(prices) != 1:
        raise MalformedPriceError(
            f"{instance_type}: {len(prices)} distinct on-demand hourly prices, not 1"
        )
    return instance_type, prices.pop()


def _latest_spot_prices(
    records: Iterable[Mapping[str, Any]],
) -> tuple[dict[tuple[str, str], Price], int]:
    """The latest price per (type, zone) among spot price history records, and how many
    records were malformed. Order does not matter; on equal timestamps the first one seen
    stays."""
    latest: dict[tuple[str, str], Price] = {}
    malformed = 0
    for record in records:
        try:
            if record.get("ProductDescription") not in SPOT_PRODUCT_DESCRIPTIONS:
                continue
            instance_type = record["InstanceType"]
            zone = record["AvailabilityZone"]
            stamp = record["Timestamp"]
            if not (isinstance(instance_type, str) and isinstance(zone, str) and zone):
                raise MalformedPriceError("record without instance type or zone")
            if not isinstance(stamp, datetime):
                raise MalformedPriceError(f"timestamp {stamp!r} is not a time")
            value = _positive_price(record.get("SpotPrice"), f"{instance_type} {zone} spot")
        except (KeyError, MalformedPriceError) as e:
            malformed += 1
            log.warning("event=spot_price_malformed error=%r", str(e))
            continue
        when = stamp.timestamp()
        key = (instance_type, zone)
        if key not in latest or when > latest[key].as_of:
            latest[key] = Price(value, SOURCE_SPOT_HISTORY, when)
    return latest, malformed


# -- one refresh ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RefreshResult:
    """What one refresh did. ``ok`` when neither query kind failed; a kind whose client was
    not given is skipped (and not a failure)."""

    started_at: float
    finished_at: float
    on_demand_updated: tuple[str, ...] = ()  # types whose price the Pricing API answered
    on_demand_not_found: tuple[str, ...] = ()  # types the Pricing API has no product for
    on_demand_errors: tuple[str, ...] = ()  # one line per failed query
    spot_updated: int = 0  # (type, zone) prices now from the spot price history
    spot_errors: tuple[str, ...] = ()
    malformed: int = 0  # products or spot records skipped as unusable
    on_demand_skipped: bool = False
    spot_skipped: bool = False

    @property
    def on_demand_ok(self) -> bool:
        return not self.on_demand_errors

    @property
    def spot_ok(self) -> bool:
        return not self.spot_errors

    @property
    def ok(self) -> bool:
        return self.on_demand_ok and self.spot_ok


async def _call(
    fn: Callable[[], Awaitable[dict[str, Any]]],
    operation: str,
    policy: RetryPolicy,
    sleep: Callable[[float], Awaitable[None]],
) -> dict[str, Any]:
    async def attempt() -> dict[str, Any]:
        try:
            return await fn()
        except (ClientError, BotoCoreError) as e:
            raise translate_error(e, operation) from e

    return await call_with_retry(
        attempt,
        is_retryable,
        policy,
        operation=operation,
        sleep=sleep,
    )


def _filters(region: str, instance_type: str | None) -> list[dict[str, str]]:
    wanted = {"regionCode": region, **ON_DEMAND_ATTRIBUTES}
    if instance_type is not None:
        wanted["instanceType"] = instance_type
    return [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in wanted.items()]


async def _products(
    pricing: Any,
    region: str,
    instance_type: str | None,
    policy: RetryPolicy,
    sleep: Callable[[float], Awaitable[None]],
) -> list[Any]:
    """Every PriceList entry of one GetProducts query, following NextToken."""
    items: list[Any] = []
    token: str | None = None
    while True:
        params: dict[str, Any] = {
            "ServiceCode": "AmazonEC2",
            "Filters": _filters(region, instance_type),
            "FormatVersion": "aws_v1",
            "MaxResults": GET_PRODUCTS_PAGE,
        }
        if token:
            params["NextToken"] = token
        page = await _call(
            lambda params=params: pricing.get_products(**params), "GetProducts", policy, sleep
        )
        items.extend(page.get("PriceList", []))
        token = page.get("NextToken")
        if not token:
            return items


async def _spot_history(
    ec2: Any,
    instance_types: Sequence[str] | None,
    start: datetime,
    policy: RetryPolicy,
    sleep: Callable[[float], Awaitable[None]],
) -> list[Mapping[str, Any]]:
    """Every record of one DescribeSpotPriceHistory query from ``start``, following NextToken."""
    records: list[Mapping[str, Any]] = []
    token: str | None = None
    while True:
        params: dict[str, Any] = {
            "StartTime": start,
            "ProductDescriptions": list(SPOT_PRODUCT_DESCRIPTIONS),
            "MaxResults": SPOT_HISTORY_PAGE,
        }
        if instance_types:
            params["InstanceTypes"] = list(instance_types)
        if token:
            params["NextToken"] = token
        page = await _call(
            lambda params=params: ec2.describe_spot_price_history(**params),
            "DescribeSpotPriceHistory",
            policy,
            sleep,
        )
        records.extend(page.get("SpotPriceHistory", []))
        token = page.get("NextToken")
        if not token:
            return records


@dataclass
class _Half:
    """What one half of a refresh found."""

    updated: list[str] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    spot: int = 0
    malformed: int = 0


def _prices_of_query(
    items: Iterable[Any], region: str, queried: str | None, half: _Half
) -> dict[str, float]:
    """The usable on-demand price per type among one query's PriceList entries."""
    found: dict[str, set[float]] = {}
    for item in items:
        try:
            instance_type, value = parse_price_list_item(item, region=region)
            if queried is not None and instance_type != queried:
                raise MalformedPriceError(f"asked for {queried}, got {instance_type}")
        except MalformedPriceError as e:
            half.malformed += 1
            log.warning("event=price_list_item_malformed region=%s error=%r", region, str(e))
            continue
        found.setdefault(instance_type, set()).add(value)
    prices: dict[str, float] = {}
    for instance_type, values in found.items():
        if len(values) > 1:  # two products disagree: believe neither
            half.malformed += 1
            log.warning(
                "event=on_demand_price_ambiguous region=%s type=%s prices=%s",
                region,
                instance_type,
                sorted(values),
            )
            continue
        prices[instance_type] = values.pop()
    return prices


async def _refresh_on_demand(
    book: PriceBook,
    pricing: Any,
    types: Sequence[str] | None,
    now: float,
    policy: RetryPolicy,
    sleep: Callable[[float], Awaitable[None]],
) -> _Half:
    half = _Half()
    new_prices: dict[str, Price] = {}
    for queried in types if types is not None else [None]:
        try:
            items = await _products(pricing, book.region, queried, policy, sleep)
        except ProviderError as e:
            half.errors.append(f"{queried or 'all types'}: {e}")
            log.warning(
                "event=on_demand_price_failed region=%s type=%s code=%s error=%r",
                book.region,
                queried,
                e.code,
                str(e),
            )
            continue
        for instance_type, value in _prices_of_query(items, book.region, queried, half).items():
            new_prices[instance_type] = Price(value, SOURCE_PRICING_API, now)
        if queried is not None and queried not in new_prices:
            half.not_found.append(queried)
    if not new_prices and not half.errors:
        half.errors.append("the Pricing API returned no usable price")
    book.update_on_demand(new_prices)
    half.updated = sorted(new_prices)
    return half


async def _refresh_spot(
    book: PriceBook,
    ec2: Any,
    types: Sequence[str] | None,
    now: float,
    policy: RetryPolicy,
    sleep: Callable[[float], Awaitable[None]],
) -> _Half:
    half = _Half()
    try:
        records = await _spot_history(ec2, types, datetime.fromtimestamp(now, UTC), policy, sleep)
    except ProviderError as e:
        half.errors.append(str(e))
        log.warning(
            "event=spot_price_failed region=%s code=%s error=%r", book.region, e.code, str(e)
        )
        return half
    latest, half.malformed = _latest_spot_prices(records)
    if not latest:
        half.errors.append("the spot price history had no usable price")
        return half
    book.replace_spot(types if types is not None else {t for t, _ in latest}, latest)
    half.spot = len(latest)
    return half


async def refresh(
    book: PriceBook,
    *,
    ec2: Any | None,
    pricing: Any | None,
    instance_types: Iterable[str] | None = None,
    now: float,
    retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock_now: Callable[[], float] | None = None,
) -> RefreshResult:
    """Refresh ``book`` once from the AWS APIs through the caller's aiobotocore clients.

    ``pricing`` is a ``pricing`` client (region from ``pricing_endpoint_region``), ``ec2`` an
    EC2 client in ``book.region``; either may be None to skip that half. ``instance_types``
    limits both halves to those types (None: every type the region has, as Karpenter asks).
    ``now`` (epoch seconds) stamps the on-demand prices and is the spot query's StartTime;
    ``clock_now`` (default: ``now`` again) stamps ``finished_at``; ``sleep`` waits between
    retries of a throttled call. Never raises for an API error: a failed query leaves the
    book's prices as they were and is listed in the result.
    """
    types = sorted(set(instance_types)) if instance_types is not None else None
    skipped = _Half()
    od = (
        await _refresh_on_demand(book, pricing, types, now, retry_policy, sleep)
        if pricing is not None
        else skipped
    )
    spot = (
        await _refresh_spot(book, ec2, types, now, retry_policy, sleep)
        if ec2 is not None
        else skipped
    )
    result = RefreshResult(
        started_at=now,
        finished_at=clock_now() if clock_now is not None else now,
        on_demand_updated=tuple(od.updated),
        on_demand_not_found=tuple(od.not_found),
        on_demand_errors=tuple(od.errors),
        spot_updated=spot.spot,
        spot_errors=tuple(spot.errors),
        malformed=od.malformed + spot.malformed,
        on_demand_skipped=pricing is None,
        spot_skipped=ec2 is None,
    )
    log.info(
        "event=prices_refreshed region=%s ok=%s on_demand=%d not_found=%d spot=%d malformed=%d",
        book.region,
        result.ok,
        len(result.on_demand_updated),
        len(result.on_demand_not_found),
        result.spot_updated,
        result.malformed,
    )
    return result


# -- the 12-hour loop ----------------------------------------------------------------------


@dataclass
class RefreshStats:
    """Counters for metrics: totals since start, and the last outcome."""

    attempts: int = 0
    failures: int = 0  # refreshes that were not ok
    on_demand_failures: int = 0
    spot_failures: int = 0
    malformed: int = 0
    last_attempt_at: float | None = None
    last_success_at: float | None = None
    last_result: RefreshResult | None = field(default=None, repr=False)


class PricingRefresher:
    """Keeps a ``PriceBook`` fresh: ``run()`` refreshes at once, then every ``interval``
    seconds, or ``failure_retry`` seconds after a refresh that failed, on ``clock``.

    The clients belong to the caller (it opens and closes them); the refresher only calls
    them. ``stats`` holds the counters the daemon turns into metrics.
    """

    def __init__(
        self,
        book: PriceBook,
        *,
        ec2: Any | None,
        pricing: Any | None,
        instance_types: Iterable[str] | None = None,
        clock: Clock | None = None,
        interval: float = DEFAULT_REFRESH_INTERVAL,
        failure_retry: float = DEFAULT_FAILURE_RETRY,
        retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        on_refresh: Callable[[RefreshResult], None] | None = None,
    ) -> None:
        if interval <= 0 or failure_retry <= 0:
            raise ValueError("interval and failure_retry must be positive")
        self.book = book
        self.ec2 = ec2
        self.pricing = pricing
        self.instance_types = None if instance_types is None else sorted(set(instance_types))
        self.clock: Clock = clock or SystemClock()
        self.interval = interval
        self.failure_retry = failure_retry
        self.retry_policy = retry_policy
        self._sleep = sleep or self.clock.sleep
        self.stats = RefreshStats()
        self.on_refresh = on_refresh  # called after every refresh, ok or not
        self._changed = asyncio.Condition()

    async def refresh_once(self) -> RefreshResult:
        """One refresh, counted in ``stats``."""
        result = await refresh(
            self.book,
            ec2=self.ec2,
            pricing=self.pricing,
            instance_types=self.instance_types,
            now=self.clock.now(),
            retry_policy=self.retry_policy,
            sleep=self._sleep,
            clock_now=self.clock.now,
        )
        await self._record(result)
        return result

    async def _record(self, result: RefreshResult) -> None:
        s = self.stats
        s.attempts += 1
        s.last_attempt_at = result.started_at
        s.malformed += result.malformed
        s.on_demand_failures += 0 if result.on_demand_ok else 1
        s.spot_failures += 0 if result.spot_ok else 1
        if result.ok:
            s.last_success_at = result.finished_at
        else:
            s.failures += 1
        s.last_result = result
        if self.on_refresh is not None:
            self.on_refresh(result)
        async with self._changed:
            self._changed.notify_all()

    def next_delay(self, result: RefreshResult) -> float:
        """Seconds until the refresh after ``result``."""
        return self.interval if result.ok else min(self.failure_retry, self.interval)

    async def run(self) -> None:
        """Refresh now and forever after; cancel the task to stop. An unexpected error in a
        refresh is logged and counted as a failed refresh, so prices never stop the daemon."""
        while True:
            try:
                result = await self.refresh_once()
            except Exception as e:
                log.exception("event=price_refresh_crashed region=%s", self.book.region)
                now = self.clock.now()
                result = RefreshResult(started_at=now, finished_at=now, on_demand_errors=(repr(e),))
                await self._record(result)
            await self.clock.sleep(self.next_delay(result))

    async def wait_for_attempts(self, count: int) -> RefreshStats:
        """Wait until ``count`` refreshes have finished in all (for tests and startup)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.stats.attempts >= count)
        return self.stats
