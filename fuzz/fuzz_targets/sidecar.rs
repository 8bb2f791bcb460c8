//! Metadata sidecars (SPEC §5): `Meta::parse` never panics on any bytes;
//! what it accepts is a non-empty JSON object whose canonical form means
//! the same as the input and re-parses to itself, byte for byte.

#![no_main]

use intake::Meta;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    match Meta::parse(data) {
        Ok(Some(m)) => {
            let again = Meta::parse(m.as_str().as_bytes())
                .unwrap_or_else(|e| panic!("canonical form {:?} does not parse: {e}", m.as_str()));
            assert_eq!(
                again.as_ref(),
                Some(&m),
                "canonical form is not a fixed point"
            );
            let input: Value = serde_json::from_slice(data).expect("accepted, so it is JSON");
            assert!(input.as_object().is_some_and(|o| !o.is_empty()));
            assert_eq!(m.to_value(), input, "canonical form changed the meaning");
        }
        Ok(None) => {
            let input: Value = serde_json::from_slice(data).expect("accepted, so it is JSON");
            assert_eq!(
                input,
                Value::Object(Default::default()),
                "only {{}} is no metadata"
            );
        }
        Err(_) => {}
    }
});
