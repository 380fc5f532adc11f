// placeholder: the Switchboard client library
