//! A user's media files and the server's record of them, as media sync
//! (`/msync/...`) reads and changes them. Media sync is independent of the
//! collection: it has its own lock per user and its own database.
//!
//! [`names`] decides which file names may touch the disk, [`zip`] reads and
//! writes the archives, [`upload`] turns a request body into a checked batch,
//! [`store`] keeps folder and database in step across crashes,
//! [`download`] opens the files a client asks for, and [`audit`] checks
//! folder and database against each other for `leitner check`.

pub mod audit;
pub mod download;
pub mod names;
pub mod store;
pub mod upload;
pub mod zip;

pub(crate) use store::Store;
