"""A local fake of the two AWS APIs the price refresher calls, for real aiobotocore clients.

moto has no Pricing API, and its DescribeSpotPriceHistory answers one constant price for
every type, ignoring filters and paging. This aiohttp server, on 127.0.0.1 only, speaks the
two wire protocols as botocore does and behaves as the AWS documentation describes:

- **AWS Price List Service, JSON 1.1** (``X-Amz-Target: AWSPriceListService.GetProducts``):
  ``TERM_MATCH`` filters on ``ServiceCode`` or any product attribute, all of which must match;
  ``MaxResults`` 1..100 (``InvalidParameterException`` otherwise); ``PriceList`` entries are
  JSON *strings* in the aws_v1 format; a ``NextToken`` belongs to its query
  (``InvalidNextTokenException`` for another one).
- **EC2 query protocol** (``Action=DescribeSpotPriceHistory``): filters by instance types,
  product descriptions and zone; with a ``StartTime`` it returns the prices set from then on
  *and*, per (type, zone, product), the last one set before it (the price in effect at the
  start time), newest first; XML as EC2 answers it.

Like the real services, a page may hold fewer items than ``MaxResults`` asked for
(``page_limit``), which is how the tests exercise paging. Faults: ``fail_next(operation,
code)`` makes the next call of that operation fail with the error EC2 or the Pricing API
sends for that code (throttling included); ``add_raw`` serves a PriceList entry verbatim,
malformed or not. ``requests`` records every call's operation and parameters.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape

from aiohttp import web
from loopback import serve

__all__ = [
    "LOCATIONS",
    "FakeAwsPricing",
    "SpotRecord",
    "ec2_product",
]

#: Price list ``location`` and usage type prefix of the regions the tests use.
LOCATIONS = {
    "us-east-1": ("US East (N. Virginia)", ""),
    "us-east-2": ("US East (Ohio)", "USE2-"),
    "us-west-2": ("US West (Oregon)", "USW2-"),
    "eu-west-1": ("EU (Ireland)", "EU-"),
    "eu-central-1": ("EU (Frankfurt)", "EUC1-"),
    "ap-south-1": ("Asia Pacific (Mumbai)", "APS3-"),
    "ap-northeast-1": ("Asia Pacific (Tokyo)", "APN1-"),
    "ap-southeast-2": ("Asia Pacific (Sydney)", "APS2-"),
}
ON_DEMAND_TERM = "JRTCKXETXF"  # the offer term code of on-demand terms
HOURLY_RATE = "6YS6EN2CT7"  # the rate code of their hourly dimension
RESERVED_TERM = "4NA7Y494T4"  # 1 year, standard, no upfront
PUBLICATION = "2026-11-20T18:41:07Z"

# HTTP status and message the real services send with these error codes.
_JSON_ERRORS = {
    "ThrottlingException": (400, "Rate exceeded"),
    "InternalErrorException": (500, "An internal error occurred"),
    "AccessDeniedException": (400, "User is not authorized to perform: pricing:GetProducts"),
}
_EC2_ERRORS = {
    "RequestLimitExceeded": (503, "Request limit exceeded."),
    "InternalError": (500, "An internal error has occurred"),
    "UnauthorizedOperation": (403, "You are not authorized to perform this operation."),
}


def _sku(*parts: str) -> str:
    digest = hashlib.sha256("/".join(parts).encode()).digest()
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "".join(alphabet[b % len(alphabet)] for b in digest[:16])


def ec2_product(
    instance_type: str,
    region: str,
    usd_per_hour: str,
    *,
    reserved_usd_per_hour: str = "",
    **attributes: str,
) -> dict[str, Any]:
    """One AmazonEC2 product as ``GetProducts`` returns it (format aws_v1), for a Linux,
    shared-tenancy, on-demand instance; ``attributes`` override product attributes."""
    location, prefix = LOCATIONS[region]
    sku = _sku(instance_type, region, *(f"{k}={v}" for k, v in sorted(attributes.items())))
    attrs = {
        "enhancedNetworkingSupported": "Yes",
        "intelTurboAvailable": "Yes",
        "memory": "16 GiB",
        "dedicatedEbsThroughput": "Up to 4750 Mbps",
        "vcpu": "4",
        "classicnetworkingsupport": "false",
        "capacitystatus": "Used",
        "locationType": "AWS Region",
        "storage": "EBS only",
        "instanceFamily": "General purpose",
        "operatingSystem": "Linux",
        "intelAvx2Available": "Yes",
        "regionCode": region,
        "physicalProcessor": "Intel Xeon Platinum 8175",
        "clockSpeed": "3.1 GHz",
        "ecu": "16",
        "networkPerformance": "Up to 10 Gigabit",
        "servicename": "Amazon Elastic Compute Cloud",
        "gpuMemory": "NA",
        "vpcnetworkingsupport": "true",
        "instanceType": instance_type,
        "tenancy": "Shared",
        "usagetype": f"{prefix}BoxUsage:{instance_type}",
        "normalizationSizeFactor": "8",
        "intelAvxAvailable": "Yes",
        "processorFeatures": "Intel AVX; Intel AVX2; Intel AVX512; Intel Turbo",
        "servicecode": "AmazonEC2",
        "licenseModel": "No License required",
        "currentGeneration": "Yes",
        "preInstalledSw": "NA",
        "location": location,
        "processorArchitecture": "64-bit",
        "marketoption": "OnDemand",
        "operation": "RunInstances",
        "availabilityzone": "NA",
    }
    attrs.update(attributes)
    on_demand = f"{sku}.{ON_DEMAND_TERM}"
    terms: dict[str, Any] = {
        "OnDemand": {
            on_demand: {
                "priceDimensions": {
                    f"{on_demand}.{HOURLY_RATE}": {
                        "unit": "Hrs",
                        "endRange": "Inf",
                        "description": f"${float(usd_per_hour):g} per On Demand "
                        f"{attrs['operatingSystem']} {instance_type} Instance Hour",
                        "appliesTo": [],
                        "rateCode": f"{on_demand}.{HOURLY_RATE}",
                        "beginRange": "0",
                        "pricePerUnit": {"USD": usd_per_hour},
                    }
                },
                "sku": sku,
                "effectiveDate": "2026-11-01T00:00:00Z",
                "offerTermCode": ON_DEMAND_TERM,
                "termAttributes": {},
            }
        },
        "Reserved": {},
    }
    if reserved_usd_per_hour:
        reserved = f"{sku}.{RESERVED_TERM}"
        terms["Reserved"][reserved] = {
            "priceDimensions": {
                f"{reserved}.{HOURLY_RATE}": {
                    "unit": "Hrs",
                    "endRange": "Inf",
                    "description": f"Linux/UNIX (Amazon VPC), {instance_type} reserved instance "
                    "applied",
                    "appliesTo": [],
                    "rateCode": f"{reserved}.{HOURLY_RATE}",
                    "beginRange": "0",
                    "pricePerUnit": {"USD": reserved_usd_per_hour},
                }
            },
            "sku": sku,
            "effectiveDate": "2026-11-01T00:00:00Z",
            "offerTermCode": RESERVED_TERM,
            "termAttributes": {
                "LeaseContractLength": "1yr",
                "OfferingClass": "standard",
                "PurchaseOption": "No Upfront",
            },
        }
    return {
        "product": {"productFamily": "Compute Instance", "attributes": attrs, "sku": sku},
        "serviceCode": "AmazonEC2",
        "terms": terms,
        "version": "20261120184107",
        "publicationDate": PUBLICATION,
    }


@dataclass(frozen=True)
class SpotRecord:
    """One spot price change, as DescribeSpotPriceHistory reports it."""

    instance_type: str
    zone: str
    price: str
    timestamp: datetime
    product: str = "Linux/UNIX"


def _token(query: Any, offset: int) -> str:
    key = hashlib.sha256(json.dumps(query, sort_keys=True, default=str).encode()).hexdigest()
    return base64.b64encode(json.dumps({"q": key[:16], "o": offset}).encode()).decode()


def _offset(query: Any, token: str | None) -> int | None:
    """The offset a NextToken stands for, or None if it belongs to another query."""
    if not token:
        return 0
    try:
        raw = json.loads(base64.b64decode(token))
        offset = int(raw["o"])
    except (ValueError, KeyError, TypeError):
        return None
    return offset if _token(query, offset) == token else None


class FakeAwsPricing:
    """The fake Pricing API and EC2 spot price history on one loopback port."""

    def __init__(self, *, page_limit: int | None = None) -> None:
        self.page_limit = page_limit  # at most this many items a page, whatever was asked
        self.products: list[dict[str, Any]] = []
        self.raw: list[tuple[str, str, str]] = []  # (instance type, region, entry text)
        self.spot: list[SpotRecord] = []
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._faults: dict[str, list[str]] = {}
        self._runner: web.AppRunner | None = None
        self.url = ""

    # setup

    def add_product(self, product: dict[str, Any]) -> None:
        self.products.append(product)

    def set_products(self, products: list[dict[str, Any]]) -> None:
        self.products = list(products)

    def add_raw(self, instance_type: str, region: str, text: str) -> None:
        """Serve ``text`` as a PriceList entry in queries for that type and region."""
        self.raw.append((instance_type, region, text))

    def fail_next(self, operation: str, code: str, times: int = 1) -> None:
        """The next ``times`` calls of ``operation`` fail with ``code``."""
        self._faults.setdefault(operation, []).extend([code] * times)

    def calls(self, operation: str) -> list[dict[str, Any]]:
        return [params for op, params in self.requests if op == operation]

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/", self._handle)
        self._runner, self.url = await serve(app)
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # dispatch

    async def _handle(self, request: web.Request) -> web.Response:
        target = request.headers.get("X-Amz-Target")
        if target is not None:
            return await self._json_api(request, target)
        form = await request.post()
        return self._ec2(form)

    def _fault(self, operation: str) -> str | None:
        queue = self._faults.get(operation)
        return queue.pop(0) if queue else None

    # Pricing API (JSON 1.1)

    @staticmethod
    def _json_error(code: str, message: str = "", status: int = 400) -> web.Response:
        status, default = _JSON_ERRORS.get(code, (status, message))
        body = {"__type": code, "Message": message or default}
        return web.json_response(
            body, status=status, content_type="application/x-amz-json-1.1", dumps=json.dumps
        )

    async def _json_api(self, request: web.Request, target: str) -> web.Response:
        service, _, operation = target.partition(".")
        params = json.loads(await request.read() or b"{}")
        self.requests.append((operation, params))
        if service != "AWSPriceListService" or operation != "GetProducts":
            return self._json_error("UnknownOperationException", f"{target} is not served")
        code = self._fault(operation)
        if code is not None:
            return self._json_error(code)
        limit = params.get("MaxResults", 100)
        if not 1 <= limit <= 100:
            return self._json_error("InvalidParameterException", "MaxResults must be 1..100")
        filters = params.get("Filters", [])
        if any(f.get("Type") != "TERM_MATCH" for f in filters):
            return self._json_error("InvalidParameterException", "the fake serves TERM_MATCH")
        matched: list[str] = [
            json.dumps(p) for p in self.products if self._matches(p, params["ServiceCode"], filters)
        ]
        wanted = {f["Field"]: f["Value"] for f in filters}
        matched += [
            text
            for instance_type, region, text in self.raw
            if wanted.get("instanceType", instance_type) == instance_type
            and wanted.get("regionCode", region) == region
        ]
        query = {"ServiceCode": params["ServiceCode"], "Filters": filters}
        start = _offset(query, params.get("NextToken"))
        if start is None:
            return self._json_error("InvalidNextTokenException", "The pagination token is invalid")
        size = min(limit, self.page_limit or limit)
        page = matched[start : start + size]
        body: dict[str, Any] = {"FormatVersion": "aws_v1", "PriceList": page}
        if start + size < len(matched):
            body["NextToken"] = _token(query, start + size)
        return web.json_response(body, content_type="application/x-amz-json-1.1")

    @staticmethod
    def _matches(product: Mapping[str, Any], service: str, filters: list[dict[str, str]]) -> bool:
        if product.get("serviceCode") != service:
            return False
        attributes = product["product"]["attributes"]
        for f in filters:
            field, value = f["Field"], f["Value"]
            actual = product.get("serviceCode") if field == "ServiceCode" else attributes.get(field)
            if actual != value:
                return False
        return True

    # EC2 (query protocol)

    @staticmethod
    def _ec2_error(code: str) -> web.Response:
        status, message = _EC2_ERRORS.get(code, (400, code))
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Response><Errors><Error><Code>{code}</Code><Message>{escape(message)}</Message>"
            "</Error></Errors><RequestID>5b7e7c3a-4c52-4d8f-9d4e-2f0e9a3b7c11</RequestID>"
            "</Response>"
        )
        return web.Response(text=body, status=status, content_type="text/xml")

    @staticmethod
    def _listed(form: Mapping[str, Any], name: str) -> list[str]:
        return [str(form[k]) for k in sorted(form, key=str) if str(k).startswith(f"{name}.")]

    def _ec2(self, form: Mapping[str, Any]) -> web.Response:
        action = str(form.get("Action", ""))
        params = {str(k): str(v) for k, v in form.items()}
        self.requests.append((action, params))
        if action != "DescribeSpotPriceHistory":
            return self._ec2_error("InvalidAction")
        code = self._fault(action)
        if code is not None:
            return self._ec2_error(code)
        types = set(self._listed(form, "InstanceType"))
        products = set(self._listed(form, "ProductDescription"))
        zone = form.get("AvailabilityZone")
        start = datetime.fromisoformat(str(form["StartTime"])) if "StartTime" in form else None
        end = datetime.fromisoformat(str(form["EndTime"])) if "EndTime" in form else None
        selected = [
            r
            for r in self.spot
            if (not types or r.instance_type in types)
            and (not products or r.product in products)
            and (zone is None or r.zone == zone)
            and (end is None or r.timestamp <= end)
        ]
        if start is not None:
            in_effect: dict[tuple[str, str, str], SpotRecord] = {}
            for r in selected:
                key = (r.instance_type, r.zone, r.product)
                if r.timestamp < start and (
                    key not in in_effect or r.timestamp > in_effect[key].timestamp
                ):
                    in_effect[key] = r
            selected = [r for r in selected if r.timestamp >= start] + list(in_effect.values())
        selected.sort(key=lambda r: r.timestamp, reverse=True)
        query = {k: v for k, v in params.items() if k not in ("NextToken", "Version")}
        offset = _offset(query, params.get("NextToken"))
        if offset is None:
            return self._ec2_error("InvalidNextToken")
        limit = int(params.get("MaxResults", 1000))
        size = min(limit, self.page_limit or limit)
        page = selected[offset : offset + size]
        items = "".join(
            "<item>"
            f"<instanceType>{escape(r.instance_type)}</instanceType>"
            f"<productDescription>{escape(r.product)}</productDescription>"
            f"<spotPrice>{escape(r.price)}</spotPrice>"
            f"<timestamp>{r.timestamp.astimezone(UTC):%Y-%m-%dT%H:%M:%S.000Z}</timestamp>"
            f"<availabilityZone>{escape(r.zone)}</availabilityZone>"
            "</item>"
            for r in page
        )
        token = _token(query, offset + size) if offset + size < len(selected) else ""
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<DescribeSpotPriceHistoryResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
            "<requestId>7a62c49f-347e-4fc4-9331-6e8eEXAMPLE</requestId>"
            f"<spotPriceHistorySet>{items}</spotPriceHistorySet>"
            f"<nextToken>{token}</nextToken>"
            "</DescribeSpotPriceHistoryResponse>"
        )
        return web.Response(text=body, content_type="text/xml")
