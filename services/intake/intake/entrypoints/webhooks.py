"""Agencies' webhook endpoints on the agency API (the agency's key, as every /v1 route):
register, list, remove, rotate the secret, read each delivery's attempts, ask a redelivery.
Another agency's endpoint is not told apart from none (404)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from pydantic import BaseModel, Field

from intake.adapters.webhook_http import UnsafeUrl
from intake.entrypoints.http import AgencyDep, documented
from intake.service_layer.webhooks import (
    DeliveryList,
    DeliveryView,
    EndpointList,
    EndpointWithSecret,
    NoSuchDelivery,
    NoSuchEndpoint,
    TooManyEndpoints,
    Webhooks,
)
from shared.problems import FieldError


async def get_webhooks(request: Request) -> Webhooks:
    return request.app.state.webhooks


WebhooksDep = Annotated[Webhooks, Depends(get_webhooks)]

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

NO_ENDPOINT = "no such webhook endpoint for this agency"
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: documented(
    404, "No webhook endpoint with this id for this agency (another agency's is not told apart)", NO_ENDPOINT)}


class NewEndpoint(BaseModel):
    url: str = Field(min_length=1, max_length=2000, examples=["https://sistem.dinsos.example/rujukan/webhook"],
                     description="https (http and private addresses in development only); redirects are not followed")


@router.post("", status_code=status.HTTP_201_CREATED, response_model=EndpointWithSecret, responses={
    409: documented(409, "The agency has as many endpoints as allowed",
                    FieldError(field="url", reason="at most 10 webhook endpoints per agency"))})
async def register_endpoint(body: NewEndpoint, agency: AgencyDep, webhooks: WebhooksDep,
                            response: Response) -> EndpointWithSecret:
    """Register a receiver: every step on the agency's referrals is POSTed to it, signed
    per Standard Webhooks 1.0 with the secret answered here (shown this once). A URL that
    may not be called (not https, credentials in it, or a host that resolves to a loopback,
    private, link-local or other non-public address) is 422 naming the field `url`."""
    try:
        created = await webhooks.register(agency.id, body.url)
    except UnsafeUrl as e:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, {"field": "url", "reason": str(e)}) from None
    except TooManyEndpoints as e:
        raise HTTPException(status.HTTP_409_CONFLICT, {
            "field": "url", "reason": f"at most {e} webhook endpoints per agency"}) from None
    response.headers["Location"] = f"/v1/webhooks/{created.id}"
    return created


@router.get("", response_model=EndpointList)
async def list_endpoints(agency: AgencyDep, webhooks: WebhooksDep) -> EndpointList:
    """The agency's endpoints (never their secrets)."""
    return await webhooks.all(agency.id)


@router.delete("/{endpoint_id}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
async def delete_endpoint(endpoint_id: str, agency: AgencyDep, webhooks: WebhooksDep) -> Response:
    """Remove the endpoint: nothing more is sent to it, what was pending is cancelled."""
    try:
        await webhooks.delete(agency.id, endpoint_id)
    except NoSuchEndpoint:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NO_ENDPOINT) from None
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{endpoint_id}/rotate", response_model=EndpointWithSecret, responses=NOT_FOUND)
async def rotate_secret(endpoint_id: str, agency: AgencyDep, webhooks: WebhooksDep) -> EndpointWithSecret:
    """A new secret (shown this once). Until `previous_secret_until` deliveries carry a
    signature with each secret, so the receiver can switch at its own pace."""
    try:
        return await webhooks.rotate(agency.id, endpoint_id)
    except NoSuchEndpoint:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NO_ENDPOINT) from None


@router.get("/{endpoint_id}/deliveries", response_model=DeliveryList, responses=NOT_FOUND)
async def list_deliveries(endpoint_id: str, agency: AgencyDep, webhooks: WebhooksDep,
                          limit: Annotated[int, Query(ge=1, le=200)] = 50) -> DeliveryList:
    """The latest deliveries to this endpoint, each with its attempts and next attempt."""
    try:
        return await webhooks.deliveries(agency.id, endpoint_id, limit)
    except NoSuchEndpoint:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NO_ENDPOINT) from None


@router.post("/{endpoint_id}/deliveries/{delivery_id}/redeliver", status_code=status.HTTP_202_ACCEPTED,
             response_model=DeliveryView, responses={404: documented(
                 404, "No such endpoint or delivery for this agency", NO_ENDPOINT)})
async def redeliver(endpoint_id: str, delivery_id: str, agency: AgencyDep, webhooks: WebhooksDep) -> DeliveryView:
    """Send this delivery again now, with the same webhook-id (and retries, as a new one)."""
    try:
        return await webhooks.redeliver(agency.id, endpoint_id, delivery_id)
    except NoSuchEndpoint:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NO_ENDPOINT) from None
    except NoSuchDelivery:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such delivery for this endpoint") from None
