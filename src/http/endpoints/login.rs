//! `/sync/hostKey`: a username and password become the host key the client
//! keeps for every later request.

use http_types::Response;
use serde::{Deserialize, Serialize};
use smol::future::FutureExt;

use super::{reply_json, Call};
use crate::ground::pool::blocking;
use crate::http::error::{Failure, Outcome};
use crate::http::request_log::RequestLine;

#[derive(Deserialize)]
struct Login {
    #[serde(rename = "u")]
    user: String,
    #[serde(rename = "p")]
    password: String,
}

#[derive(Serialize)]
struct HostKey {
    key: String,
}

pub(crate) async fn host_key(call: &mut Call, line: &mut RequestLine) -> Outcome<Response> {
    let login: Login = call.json().await?;
    let service = call.service.clone();
    let stopping = async {
        service.activity.stopped().await;
        Err(Failure::unavailable("the server is stopping"))
    };
    let known = async {
        service
            .users
            .login(call.peer, &login.user, &login.password)
            .await
            .ok_or_else(Failure::forbidden)
    }
    .or(stopping)
    .await?;
    line.user = Some(known.account.name.clone());
    let (client, peer) = (call.header.client.clone(), call.peer);
    let key = blocking(move || service.users.new_device(&known, &client, peer)).await;
    Ok(reply_json(HostKey { key }, call.zstd()).await)
}
