//! Catching a worker's panic as a message for the coordinator, instead of a trace on stderr.
//!
//! The panic hook is global, so it is installed once and chains to the previous hook for
//! every thread that is not running a worker: the user's own panics look as they always do.

use std::any::Any;
use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

thread_local! {
    /// `Some` while this thread runs a worker; then holds the last panic's message.
    static CAPTURE: RefCell<Option<Option<String>>> = const { RefCell::new(None) };
}

static INSTALL: Once = Once::new();

fn install() {
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let message = match info.location() {
                Some(at) => format!(
                    "{} ({}:{})",
                    payload_text(info.payload()),
                    at.file(),
                    at.line()
                ),
                None => payload_text(info.payload()),
            };
            let captured = CAPTURE
                .try_with(|slot| match slot.try_borrow_mut() {
                    Ok(mut slot) => match slot.as_mut() {
                        Some(last) => {
                            *last = Some(message);
                            true
                        }
                        None => false,
                    },
                    Err(_) => false,
                })
                .unwrap_or(false);
            if !captured {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, turning a panic into its message (with the source location).
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    install();
    CAPTURE.with(|slot| *slot.borrow_mut() = Some(None));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    let message = CAPTURE.with(|slot| slot.borrow_mut().take()).flatten();
    result.map_err(|payload| message.unwrap_or_else(|| payload_text(payload.as_ref())))
}

fn payload_text(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic with a non-text payload".to_owned()
    }
}
