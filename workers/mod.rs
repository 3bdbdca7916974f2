//! The built-in stages. They are compiled into the `ringleader` binary, outside the
//! library, so they can use nothing but the library's public API: exactly what a stage in
//! a user's crate can use.

pub(crate) mod crawl;
pub(crate) mod demos;
pub(crate) mod particles;
