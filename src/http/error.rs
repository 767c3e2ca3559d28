//! The one error type endpoints return. Its status is what the Anki client
//! turns into a message, so each constructor says which message the user sees.

use http_types::StatusCode;

#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: StatusCode,
    /// For the log and for people with curl; Anki clients show only the status.
    pub(crate) message: String,
    /// The disk is full: endpoints with a way to show the client a message
    /// (`meta`, media replies) say so in words; elsewhere it is a 507.
    pub(crate) disk_full: bool,
}

impl Failure {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
            disk_full: false,
        }
    }

    /// 507 "Insufficient Storage": the client shows it as a network error
    /// whose details name the status, where a 500 would say "try again in a
    /// few minutes", which a full disk will not mend. Steps that can carry
    /// words ([`Failure::disk_full`] is checked by `meta` and the media
    /// endpoints) say more.
    pub(crate) fn disk_full(context: impl std::fmt::Display) -> Failure {
        Failure {
            status: StatusCode::InsufficientStorage,
            message: format!("the server's disk is full ({context})"),
            disk_full: true,
        }
    }

    /// 400: the client tells the user to run Check Database.
    pub(crate) fn bad_request(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::BadRequest, message)
    }

    /// 403: "username or password incorrect"; desktop forgets its login.
    pub(crate) fn forbidden() -> Failure {
        Failure::new(StatusCode::Forbidden, "unknown user or wrong password")
    }

    /// 409: "only one copy of Anki can sync at once".
    pub(crate) fn conflict(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::Conflict, message)
    }

    /// 500: "server problem, try again later".
    pub(crate) fn internal(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::InternalServerError, message)
    }

    /// 503: also "server problem, try again later", for passing conditions.
    pub(crate) fn unavailable(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::ServiceUnavailable, message)
    }

    /// 501: "your Anki is too old".
    pub(crate) fn too_old(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::NotImplemented, message)
    }
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Failure {
        // Rows from a client that break a constraint are the client's data
        // problem (400: "check database"), not passing server trouble.
        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) {
            return Failure::bad_request(format!("database constraint: {e}"));
        }
        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
            return Failure::disk_full(e);
        }
        Failure::internal(format!("database: {e}"))
    }
}

impl From<crate::http::body::BodyError> for Failure {
    fn from(e: crate::http::body::BodyError) -> Failure {
        use crate::http::body::BodyError;
        match e {
            BodyError::TooLarge | BodyError::Malformed(_) => Failure::bad_request(e.to_string()),
            BodyError::Output(e) => e.into(),
            BodyError::Busy => Failure::unavailable(e.to_string()),
        }
    }
}

impl From<crate::storage::collection::StoreError> for Failure {
    fn from(e: crate::storage::collection::StoreError) -> Failure {
        use crate::storage::collection::StoreError;
        let full = match &e {
            StoreError::Sql(sql) => sql.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull),
            StoreError::Io(io) => crate::ground::durable::is_disk_full(io),
            StoreError::Unreadable(_) => false,
        };
        if full {
            return Failure::disk_full(e);
        }
        Failure::internal(e.to_string())
    }
}

impl From<crate::storage::media::upload::UploadError> for Failure {
    fn from(e: crate::storage::media::upload::UploadError) -> Failure {
        use crate::storage::media::upload::UploadError;
        match e {
            UploadError::Refused(_) => Failure::bad_request(e.to_string()),
            UploadError::Io(ref io) if crate::ground::durable::is_disk_full(io) => {
                Failure::disk_full(e)
            }
            UploadError::Io(_) => Failure::internal(e.to_string()),
        }
    }
}

impl From<crate::storage::media::download::DownloadError> for Failure {
    fn from(e: crate::storage::media::download::DownloadError) -> Failure {
        use crate::storage::media::download::DownloadError;
        match e {
            DownloadError::TooMany(_) => Failure::bad_request(e.to_string()),
            DownloadError::Unknown | DownloadError::Missing => Failure::conflict(e.to_string()),
            DownloadError::Store(e) => e.into(),
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        if crate::ground::durable::is_disk_full(&e) {
            return Failure::disk_full(e);
        }
        Failure::internal(format!("i/o: {e}"))
    }
}

pub(crate) type Outcome<T> = Result<T, Failure>;
