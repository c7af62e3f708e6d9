//! The embedded S3 endpoint's storage: s3s-fs over a folder, plus the one
//! call it lacks that driftless needs, ListMultipartUploads (the
//! reconciliation job finds multipart uploads nobody recorded with it; real
//! S3 and MinIO answer it themselves). Every other call goes to s3s-fs as is.
//!
//! s3s-fs keeps an upload in progress as `.upload-<id>.json` (its owner)
//! beside `.bucket-<b64 bucket>.object-<b64 key>.upload-<id>.metadata.json`
//! in the root folder; the listing reads those names.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::Engine;
use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};

/// s3s-fs with ListMultipartUploads.
pub struct EmbeddedFs {
    inner: s3s_fs::FileSystem,
    root: PathBuf,
}

impl EmbeddedFs {
    /// Storage over the folder `root` (created by the caller).
    pub fn new(root: &Path) -> std::io::Result<Self> {
        let inner =
            s3s_fs::FileSystem::new(root).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        Ok(Self {
            inner,
            root: root.to_owned(),
        })
    }

    /// Where part `n` of upload `id` keeps its ETag (a name s3s-fs's own
    /// listings do not match).
    fn etag_file(&self, id: &str, n: i32) -> PathBuf {
        // Upload ids are UUIDs; anything else must not name a path.
        let id: String = id
            .chars()
            .filter(|c| c.is_ascii_hexdigit() || *c == '-')
            .collect();
        self.root.join(format!(".etag-{id}-{n}"))
    }

    /// Drops the ETags of a finished (completed or aborted) upload.
    fn forget_etags(&self, id: &str) {
        let prefix = format!(".etag-{id}-");
        if let Ok(dir) = std::fs::read_dir(&self.root) {
            for entry in dir.flatten() {
                if entry
                    .file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(&prefix))
                {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }

    /// Uploads in progress in `bucket`: (key, upload id, started), sorted.
    fn uploads(&self, bucket: &str) -> std::io::Result<Vec<(String, String, SystemTime)>> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let want = format!(".bucket-{}.object-", b64.encode(bucket));
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.root)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(rest) = name
                .to_str()
                .and_then(|n| n.strip_prefix(&want))
                .and_then(|n| n.strip_suffix(".metadata.json"))
            else {
                continue;
            };
            let Some((key, id)) = rest.rsplit_once(".upload-") else {
                continue;
            };
            let Some(key) = b64.decode(key).ok().and_then(|k| String::from_utf8(k).ok()) else {
                continue;
            };
            // Completed or aborted uploads lose their owner file first.
            let owner = self.root.join(format!(".upload-{id}.json"));
            let Ok(meta) = std::fs::metadata(&owner) else {
                continue;
            };
            out.push((
                key,
                id.to_owned(),
                meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            ));
        }
        out.sort();
        Ok(out)
    }
}

// The attribute must see the methods, so the macro writes the whole impl.
macro_rules! delegate {
    ($($name:ident: $input:ident => $output:ident;)* { $($own:tt)* }) => {
        #[async_trait::async_trait]
        impl S3 for EmbeddedFs {
            $(
                async fn $name(&self, req: S3Request<$input>) -> S3Result<S3Response<$output>> {
                    self.inner.$name(req).await
                }
            )*
            $($own)*
        }
    };
}

delegate! {
        create_bucket: CreateBucketInput => CreateBucketOutput;
        copy_object: CopyObjectInput => CopyObjectOutput;
        delete_bucket: DeleteBucketInput => DeleteBucketOutput;
        delete_object: DeleteObjectInput => DeleteObjectOutput;
        delete_objects: DeleteObjectsInput => DeleteObjectsOutput;
        get_bucket_location: GetBucketLocationInput => GetBucketLocationOutput;
        get_object: GetObjectInput => GetObjectOutput;
        head_bucket: HeadBucketInput => HeadBucketOutput;
        head_object: HeadObjectInput => HeadObjectOutput;
        list_buckets: ListBucketsInput => ListBucketsOutput;
        list_objects: ListObjectsInput => ListObjectsOutput;
        list_objects_v2: ListObjectsV2Input => ListObjectsV2Output;
        put_object: PutObjectInput => PutObjectOutput;
        create_multipart_upload: CreateMultipartUploadInput => CreateMultipartUploadOutput;
        upload_part_copy: UploadPartCopyInput => UploadPartCopyOutput;
{

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        let (id, n) = (req.input.upload_id.clone(), req.input.part_number);
        let out = self.inner.upload_part(req).await?;
        if let Some(etag) = out.output.e_tag.as_ref() {
            // Written after the part: a crash between the two leaves a part
            // without an ETag, which the commit takes from the client.
            std::fs::write(self.etag_file(&id, n), etag.value())
                .map_err(|e| s3_error!(InternalError, "recording the part's ETag: {e}"))?;
        }
        Ok(out)
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        let id = req.input.upload_id.clone();
        let mut out = self.inner.list_parts(req).await?;
        for part in out.output.parts.iter_mut().flatten() {
            let Some(n) = part.part_number else { continue };
            if let Ok(etag) = std::fs::read_to_string(self.etag_file(&id, n)) {
                part.e_tag = Some(ETag::Strong(etag));
            }
        }
        Ok(out)
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let id = req.input.upload_id.clone();
        let out = self.inner.complete_multipart_upload(req).await?;
        self.forget_etags(&id);
        Ok(out)
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let id = req.input.upload_id.clone();
        let out = self.inner.abort_multipart_upload(req).await?;
        self.forget_etags(&id);
        Ok(out)
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        if !self.root.join(&input.bucket).is_dir() {
            return Err(s3_error!(NoSuchBucket));
        }
        let max = input.max_uploads.unwrap_or(1000).clamp(1, 1000) as usize;
        let prefix = input.prefix.clone().unwrap_or_default();
        let after = (
            input.key_marker.clone().unwrap_or_default(),
            input.upload_id_marker.clone().unwrap_or_default(),
        );
        let all = self
            .uploads(&input.bucket)
            .map_err(|e| s3_error!(InternalError, "listing uploads: {e}"))?;
        let mut matching = all.into_iter().filter(|(k, id, _)| {
            k.starts_with(&prefix)
                && (after.0.is_empty() || (k.as_str(), id.as_str()) > (after.0.as_str(), after.1.as_str()))
        });
        let page: Vec<_> = matching.by_ref().take(max).collect();
        let truncated = matching.next().is_some();
        let last = page.last().cloned();
        let uploads = page
            .into_iter()
            .map(|(key, id, started)| MultipartUpload {
                key: Some(key),
                upload_id: Some(id),
                initiated: Some(Timestamp::from(started)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: input.prefix,
            is_truncated: Some(truncated),
            next_key_marker: last.as_ref().filter(|_| truncated).map(|l| l.0.clone()),
            next_upload_id_marker: last.filter(|_| truncated).map(|l| l.1),
            max_uploads: Some(max as i32),
            uploads: Some(uploads),
            ..Default::default()
        }))
    }
}
}
