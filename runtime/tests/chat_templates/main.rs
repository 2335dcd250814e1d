//! Chat templates against reference renderings made by transformers and FastChat.

mod templates;
