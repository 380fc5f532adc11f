// The JSON value type and percent-decoding live in the leaf target `SwitchboardJSON`
// (so the pure `SocketIO` target needs nothing else of ours); everything that imports
// `SwitchboardCore` sees them as before.
@_exported import SwitchboardJSON
