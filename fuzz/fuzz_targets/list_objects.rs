//! Fuzz target: the ListObjectsV2 and multipart answer parsers never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use skyfill::remote::s3::listing;

fuzz_target!(|data: &[u8]| {
    if let Ok(page) = listing::parse_list(data) {
        assert!(!page.truncated || page.next_token.is_some());
    }
    let _ = listing::parse_upload_id(data);
    let _ = listing::parse_parts(data);
    let _ = listing::is_error_document(data);
});
