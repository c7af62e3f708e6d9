//! The bucket's CORS rule: browsers on the web client's origins PUT and GET
//! presigned URLs straight from the page.

use super::{BlobError, BlobStore, map_err};

/// The methods browsers may use on presigned URLs.
const CORS_METHODS: &[&str] = &["GET", "PUT", "HEAD"];
/// How long a browser may cache a CORS preflight answer.
const CORS_MAX_AGE_SECS: i32 = 3600;

/// The bucket CORS rule [`BlobStore::ensure_cors`] sets, as the S3
/// `PutBucketCors` XML document, for an operator to apply by hand.
pub fn cors_rule_xml(origins: &[String]) -> String {
    let origins: String = origins
        .iter()
        .map(|o| format!("<AllowedOrigin>{o}</AllowedOrigin>"))
        .collect();
    let methods: String = CORS_METHODS
        .iter()
        .map(|m| format!("<AllowedMethod>{m}</AllowedMethod>"))
        .collect();
    format!(
        "<CORSConfiguration><CORSRule>{origins}{methods}<AllowedHeader>*</AllowedHeader>\
         <ExposeHeader>ETag</ExposeHeader><MaxAgeSeconds>{CORS_MAX_AGE_SECS}</MaxAgeSeconds>\
         </CORSRule></CORSConfiguration>"
    )
}

/// A rule the SDK would not build (never with the fixed parts above).
fn invalid_rule(e: aws_sdk_s3::error::BuildError) -> BlobError {
    BlobError::Refused {
        code: "InvalidRequest".into(),
        message: format!("CORS rule: {e}"),
    }
}

impl BlobStore {
    /// Lets browsers on `origins` use presigned URLs straight from the
    /// page (the web client's uploads and downloads): a bucket CORS rule
    /// allowing GET, PUT and HEAD with any request header, exposing the
    /// `ETag` a part's PUT answers with (the commit needs it). The rule
    /// replaces the bucket's CORS configuration; [`cors_rule_xml`] is the
    /// same rule for an operator to set by hand where the key may not.
    pub async fn ensure_cors(&self, origins: &[String]) -> Result<(), BlobError> {
        use aws_sdk_s3::types::{CorsConfiguration, CorsRule};
        let rule = CorsRule::builder()
            .set_allowed_origins(Some(origins.to_vec()))
            .set_allowed_methods(Some(CORS_METHODS.iter().map(|m| (*m).to_owned()).collect()))
            .allowed_headers("*")
            .expose_headers("ETag")
            .max_age_seconds(CORS_MAX_AGE_SECS)
            .build()
            .map_err(invalid_rule)?;
        let config = CorsConfiguration::builder()
            .cors_rules(rule)
            .build()
            .map_err(invalid_rule)?;
        self.client
            .put_bucket_cors()
            .bucket(&self.bucket)
            .cors_configuration(config)
            .send()
            .await
            .map_err(map_err)?;
        Ok(())
    }
}
