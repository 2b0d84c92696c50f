//! Variables by identity: rules name them by text, the engine dispatches
//! on this enum (a string match per value was a tenth of the CPU time).

/// A SecLang variable (collection or scalar).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Var {
    Args,
    ArgsCombinedSize,
    ArgsGet,
    ArgsGetNames,
    ArgsNames,
    ArgsPost,
    ArgsPostNames,
    AuthType,
    Duration,
    Env,
    Files,
    FilesCombinedSize,
    FilesNames,
    FilesSizes,
    FullRequest,
    FullRequestLength,
    Geo,
    Global,
    HighestSeverity,
    InboundDataError,
    Ip,
    MatchedVar,
    MatchedVars,
    MatchedVarsNames,
    MatchedVarName,
    MultipartBoundaryQuoted,
    MultipartBoundaryWhitespace,
    MultipartCrlfLfLines,
    MultipartDataAfter,
    MultipartDataBefore,
    MultipartFilename,
    MultipartFileLimitExceeded,
    MultipartHeaderFolding,
    MultipartInvalidHeaderFolding,
    MultipartInvalidPart,
    MultipartInvalidQuoting,
    MultipartLfLine,
    MultipartMissingSemicolon,
    MultipartName,
    MultipartPartHeaders,
    MultipartStrictError,
    MultipartUnmatchedBoundary,
    OutboundDataError,
    PathInfo,
    QueryString,
    RemoteAddr,
    RemoteHost,
    RemotePort,
    RemoteUser,
    ReqbodyError,
    ReqbodyErrorMsg,
    ReqbodyProcessor,
    ReqbodyProcessorError,
    RequestBasename,
    RequestBody,
    RequestBodyLength,
    RequestCookies,
    RequestCookiesNames,
    RequestFilename,
    RequestHeaders,
    RequestHeadersNames,
    RequestLine,
    RequestMethod,
    RequestProtocol,
    RequestUri,
    RequestUriRaw,
    Resource,
    ResponseBody,
    ResponseContentLength,
    ResponseContentType,
    ResponseHeaders,
    ResponseHeadersNames,
    ResponseProtocol,
    ResponseStatus,
    Rule,
    ServerAddr,
    ServerName,
    ServerPort,
    Session,
    StatusLine,
    Time,
    TimeDay,
    TimeEpoch,
    TimeHour,
    TimeMin,
    TimeMon,
    TimeSec,
    TimeWday,
    TimeYear,
    Tx,
    UniqueId,
    UrlencodedError,
    User,
    Xml,
}

/// Every supported variable with its name, upper case.
pub const VARS: &[(&str, Var)] = &[
    ("ARGS", Var::Args),
    ("ARGS_COMBINED_SIZE", Var::ArgsCombinedSize),
    ("ARGS_GET", Var::ArgsGet),
    ("ARGS_GET_NAMES", Var::ArgsGetNames),
    ("ARGS_NAMES", Var::ArgsNames),
    ("ARGS_POST", Var::ArgsPost),
    ("ARGS_POST_NAMES", Var::ArgsPostNames),
    ("AUTH_TYPE", Var::AuthType),
    ("DURATION", Var::Duration),
    ("ENV", Var::Env),
    ("FILES", Var::Files),
    ("FILES_COMBINED_SIZE", Var::FilesCombinedSize),
    ("FILES_NAMES", Var::FilesNames),
    ("FILES_SIZES", Var::FilesSizes),
    ("FULL_REQUEST", Var::FullRequest),
    ("FULL_REQUEST_LENGTH", Var::FullRequestLength),
    ("GEO", Var::Geo),
    ("GLOBAL", Var::Global),
    ("HIGHEST_SEVERITY", Var::HighestSeverity),
    ("INBOUND_DATA_ERROR", Var::InboundDataError),
    ("IP", Var::Ip),
    ("MATCHED_VAR", Var::MatchedVar),
    ("MATCHED_VARS", Var::MatchedVars),
    ("MATCHED_VARS_NAMES", Var::MatchedVarsNames),
    ("MATCHED_VAR_NAME", Var::MatchedVarName),
    ("MULTIPART_BOUNDARY_QUOTED", Var::MultipartBoundaryQuoted),
    (
        "MULTIPART_BOUNDARY_WHITESPACE",
        Var::MultipartBoundaryWhitespace,
    ),
    ("MULTIPART_CRLF_LF_LINES", Var::MultipartCrlfLfLines),
    ("MULTIPART_DATA_AFTER", Var::MultipartDataAfter),
    ("MULTIPART_DATA_BEFORE", Var::MultipartDataBefore),
    ("MULTIPART_FILENAME", Var::MultipartFilename),
    (
        "MULTIPART_FILE_LIMIT_EXCEEDED",
        Var::MultipartFileLimitExceeded,
    ),
    ("MULTIPART_HEADER_FOLDING", Var::MultipartHeaderFolding),
    (
        "MULTIPART_INVALID_HEADER_FOLDING",
        Var::MultipartInvalidHeaderFolding,
    ),
    ("MULTIPART_INVALID_PART", Var::MultipartInvalidPart),
    ("MULTIPART_INVALID_QUOTING", Var::MultipartInvalidQuoting),
    ("MULTIPART_LF_LINE", Var::MultipartLfLine),
    (
        "MULTIPART_MISSING_SEMICOLON",
        Var::MultipartMissingSemicolon,
    ),
    ("MULTIPART_NAME", Var::MultipartName),
    ("MULTIPART_PART_HEADERS", Var::MultipartPartHeaders),
    ("MULTIPART_STRICT_ERROR", Var::MultipartStrictError),
    (
        "MULTIPART_UNMATCHED_BOUNDARY",
        Var::MultipartUnmatchedBoundary,
    ),
    ("OUTBOUND_DATA_ERROR", Var::OutboundDataError),
    ("PATH_INFO", Var::PathInfo),
    ("QUERY_STRING", Var::QueryString),
    ("REMOTE_ADDR", Var::RemoteAddr),
    ("REMOTE_HOST", Var::RemoteHost),
    ("REMOTE_PORT", Var::RemotePort),
    ("REMOTE_USER", Var::RemoteUser),
    ("REQBODY_ERROR", Var::ReqbodyError),
    ("REQBODY_ERROR_MSG", Var::ReqbodyErrorMsg),
    ("REQBODY_PROCESSOR", Var::ReqbodyProcessor),
    ("REQBODY_PROCESSOR_ERROR", Var::ReqbodyProcessorError),
    ("REQUEST_BASENAME", Var::RequestBasename),
    ("REQUEST_BODY", Var::RequestBody),
    ("REQUEST_BODY_LENGTH", Var::RequestBodyLength),
    ("REQUEST_COOKIES", Var::RequestCookies),
    ("REQUEST_COOKIES_NAMES", Var::RequestCookiesNames),
    ("REQUEST_FILENAME", Var::RequestFilename),
    ("REQUEST_HEADERS", Var::RequestHeaders),
    ("REQUEST_HEADERS_NAMES", Var::RequestHeadersNames),
    ("REQUEST_LINE", Var::RequestLine),
    ("REQUEST_METHOD", Var::RequestMethod),
    ("REQUEST_PROTOCOL", Var::RequestProtocol),
    ("REQUEST_URI", Var::RequestUri),
    ("REQUEST_URI_RAW", Var::RequestUriRaw),
    ("RESOURCE", Var::Resource),
    ("RESPONSE_BODY", Var::ResponseBody),
    ("RESPONSE_CONTENT_LENGTH", Var::ResponseContentLength),
    ("RESPONSE_CONTENT_TYPE", Var::ResponseContentType),
    ("RESPONSE_HEADERS", Var::ResponseHeaders),
    ("RESPONSE_HEADERS_NAMES", Var::ResponseHeadersNames),
    ("RESPONSE_PROTOCOL", Var::ResponseProtocol),
    ("RESPONSE_STATUS", Var::ResponseStatus),
    ("RULE", Var::Rule),
    ("SERVER_ADDR", Var::ServerAddr),
    ("SERVER_NAME", Var::ServerName),
    ("SERVER_PORT", Var::ServerPort),
    ("SESSION", Var::Session),
    ("STATUS_LINE", Var::StatusLine),
    ("TIME", Var::Time),
    ("TIME_DAY", Var::TimeDay),
    ("TIME_EPOCH", Var::TimeEpoch),
    ("TIME_HOUR", Var::TimeHour),
    ("TIME_MIN", Var::TimeMin),
    ("TIME_MON", Var::TimeMon),
    ("TIME_SEC", Var::TimeSec),
    ("TIME_WDAY", Var::TimeWday),
    ("TIME_YEAR", Var::TimeYear),
    ("TX", Var::Tx),
    ("UNIQUE_ID", Var::UniqueId),
    ("URLENCODED_ERROR", Var::UrlencodedError),
    ("USER", Var::User),
    ("XML", Var::Xml),
];

impl Var {
    /// The variable called `name` (any case).
    pub fn from_name(name: &str) -> Option<Var> {
        VARS.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    pub fn name(self) -> &'static str {
        // `VARS` lists the variables in the enum's order (a test holds it
        // to that), so the name is found by index; the search is a
        // fallback, never a wrong name.
        match VARS.get(self as usize) {
            Some((name, var)) if *var == self => name,
            _ => VARS
                .iter()
                .find(|(_, v)| *v == self)
                .map_or("?", |(n, _)| n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_listed_in_the_enums_order_and_round_trip() {
        for (index, (name, var)) in VARS.iter().enumerate() {
            assert_eq!(*var as usize, index, "{name} is out of the enum's order");
            assert_eq!(var.name(), *name);
            assert_eq!(Var::from_name(&name.to_ascii_lowercase()), Some(*var));
        }
    }
}
