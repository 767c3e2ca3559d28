//! Old clients (sync versions 8 to 10): no `anki-sync` header, a multipart
//! form whose fields (the host key among them) come after the payload,
//! gzipped. `dispatch` reads the form whole here, then answers it through
//! the same endpoints as version 10.

use std::sync::Arc;

use http_types::Request;

use super::{blocking, full};
use crate::http::body::Incoming;
use crate::http::error::{Failure, Outcome};
use crate::http::framing;
use crate::http::request_log::RequestLine;
use crate::http::route::{Endpoint, SyncMethod};
use crate::service::Service;

/// The `content-type` of a legacy client's request: a multipart form and no
/// `anki-sync` header.
pub(super) fn legacy_form(req: &Request) -> Option<String> {
    if req.header(framing::SYNC_HEADER).is_some() {
        return None;
    }
    let content_type = req.header("content-type")?.as_str();
    content_type
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
        .then(|| content_type.to_owned())
}

/// A legacy payload's gzip undone, its memory charged as it grows,
/// refusing more than `limit` bytes out. Blocking.
fn gunzip(data: &[u8], limit: u64, charge: &mut crate::ground::budget::Charge) -> Outcome<Vec<u8>> {
    use std::io::Read;
    let mut decoder = flate2::read::GzDecoder::new(data);
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = decoder
            .read(&mut chunk)
            .map_err(|e| Failure::bad_request(format!("bad gzip payload: {e}")))?;
        if n == 0 {
            return Ok(out);
        }
        if (out.len() + n) as u64 > limit {
            return Err(Failure::new(
                http_types::StatusCode::PayloadTooLarge,
                "payload too large",
            ));
        }
        out.reserve(n);
        charge
            .hold(out.capacity() as u64)
            .map_err(crate::http::body::BodyError::from)?;
        out.extend_from_slice(&chunk[..n]);
    }
}

/// An old client's request (sync versions 8 to 10), read from its form.
pub(super) struct LegacyForm {
    pub(super) fields: crate::http::framing::multipart::Fields,
    /// `data`, un-gzipped (an upload's goes to `upload` instead).
    pub(super) payload: Vec<u8>,
    /// The payload's memory, charged to the budget.
    _charge: Option<crate::ground::budget::Charge>,
    pub(super) upload: Option<crate::storage::collection::upload::Received>,
}

/// Reads an old client's form: its fields come after the payload, so the
/// whole form is read first (a full upload's file into a temp file in the
/// data folder, as whose it is shows only at its end).
pub(super) async fn read_legacy_form(
    service: &Arc<Service>,
    req: &mut Request,
    endpoint: Endpoint,
    content_type: &str,
    line: &RequestLine,
) -> Outcome<LegacyForm> {
    let mut form = Incoming::new(
        req.take_body(),
        line.received.clone(),
        service.budget.clone(),
    );
    if endpoint == Endpoint::Sync(SyncMethod::Upload) {
        let base = service.config.base.clone();
        let (received, fields) =
            full::receive_form(base, &mut form, content_type, service.collection_limit()).await?;
        return Ok(LegacyForm {
            fields,
            payload: Vec::new(),
            _charge: None,
            upload: Some(received),
        });
    }
    let limit = endpoint.body_limit(service.collection_limit());
    let (fields, data) = form.read_form(content_type, limit).await?;
    let mut charge = None;
    let payload = match (fields.data, fields.get("c")) {
        // AnkiDroid leaves `data` out of a request without arguments.
        (false, _) => b"{}".to_vec(),
        // `c` says gzip; media uploads leave it out (their zip is sent as
        // it is).
        (true, None | Some("0")) => data,
        (true, Some(_)) => {
            let mut held = service.budget.charge();
            let (payload, held) = blocking(move || {
                let payload = gunzip(&data, limit.saturating_mul(3), &mut held)?;
                Ok::<_, Failure>((payload, held))
            })
            .await?;
            charge = Some(held);
            payload
        }
    };
    Ok(LegacyForm {
        fields,
        payload,
        _charge: charge,
        upload: None,
    })
}
