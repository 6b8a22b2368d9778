%% migctl_lib: the helpers every agent module shares.
%%
%% The agent modules keep one contract with the Go side (see
%% migctl_agent): every exported function catches everything and returns
%% {ok, ...} | {error, Atom | Binary}; sessions only leave as
%% term_to_binary blobs inside framed binaries. The pieces of that contract
%% live here once, so that a change to how an error is reported or an id
%% is framed is made in one place and not copied across modules:
%%
%%   safe/1, fail/1     the catch-everything wrapper and the way to bail
%%                      out of it with a reason meant for the operator;
%%   ids/1, enc/2       the <<IdLen:32, Id>>* and
%%                      <<IdLen:32, Id, BlobLen:32, Blob>>* frames;
%%   la/1, mint/2       integer fields of a session map, 0 / -1 when absent;
%%   local_copy/1       a Mnesia table this node can read as its own ETS
%%                      table (disc_copies or ram_copies, loaded);
%%   odd_*/0,1, key/2   the count (and first keys) of rows that are not
%%                      sessions, which a check reports instead of skipping.
%%
%% No state: the odd-row count lives in the calling process's dictionary,
%% and every agent call runs in a fresh rpc process.
-module(migctl_lib).

-export([safe/1, fail/1, ids/1, enc/2, la/1, mint/2, local_copy/1,
         key/2, odd_reset/0, odd_row/1, odd/0, show/1, error_text/2]).

%% safe(F) -> F() | {error, Reason}: a throw of fail/1 is the reason as
%% given; anything else is rendered to a binary (never the term itself: an
%% exception can carry a session map, which ergo's decoder cannot take).
safe(F) ->
    try F()
    catch
        throw:{migctl, R} -> {error, R};
        C:R:St -> {error, iolist_to_binary(io_lib:format("~p:~0P at ~0P", [C, R, 30, St, 8]))}
    end.

fail(R) -> throw({migctl, R}).

%% error_text(What, E): a short binary reason for an error term of a
%% library (dets, select), bounded so that no large term is sent back.
error_text(What, E) -> iolist_to_binary(io_lib:format("~s: ~0P", [What, E, 10])).

%% ids(<<IdLen:32, Id/binary>>*) -> [Id]
ids(Bin) -> ids(Bin, []).

ids(<<>>, Acc) -> lists:reverse(Acc);
ids(<<L:32, Id:L/binary, Rest/binary>>, Acc) -> ids(Rest, [Id | Acc]);
ids(_, _) -> fail(bad_frame).

%% enc(Id, S) -> iolist <<IdLen:32, Id, BlobLen:32, term_to_binary(S)>>
enc(Id, S) ->
    B = term_to_binary(S),
    [<<(byte_size(Id)):32>>, Id, <<(byte_size(B)):32>>, B].

%% la(S): last_accessed, 0 when absent or not an integer.
la(S) ->
    case maps:get(last_accessed, S, 0) of
        L when is_integer(L) -> L;
        _ -> 0
    end.

%% mint(K, S): an integer field of a session map, -1 when absent.
mint(K, S) when is_map(S) ->
    case maps:get(K, S, undefined) of
        V when is_integer(V) -> V;
        _ -> -1
    end;
mint(_, _) -> -1.

%% local_copy(Tab): a disc_copies/ram_copies table is an ETS table of the
%% same name on this node, which is read directly (what dirty reads do,
%% without building a result list).
local_copy(Tab) ->
    mnesia:system_info(is_running) =:= yes orelse fail(mnesia_not_running),
    lists:member(Tab, mnesia:system_info(tables)) orelse fail(no_such_table),
    case mnesia:table_info(Tab, storage_type) of
        T when T =:= disc_copies; T =:= ram_copies -> ok;
        _ -> fail(no_local_copy)
    end,
    case ets:info(Tab, size) of
        undefined -> fail(table_not_loaded);
        _ -> ok
    end.

%% ------------------------------------------------------ rows not sessions

-define(ODD_KEYS, 10).

%% key(Kind, Row): the key of a row of any shape (a Mnesia record's key is
%% its second element).
key(mnesia, Row) when is_tuple(Row), tuple_size(Row) >= 2 -> element(2, Row);
key(_, Row) when is_tuple(Row), tuple_size(Row) >= 1 -> element(1, Row);
key(_, Row) -> Row.

odd_reset() -> put(migctl_odd, {0, []}).

odd_row(Key) ->
    {N, Keys} = case get(migctl_odd) of
                    undefined -> {0, []};
                    V -> V
                end,
    Keys2 = case length(Keys) < ?ODD_KEYS of
                true -> [show(Key) | Keys];
                false -> Keys
            end,
    put(migctl_odd, {N + 1, Keys2}).

%% odd() -> <<Count:32, (KeyLen:32, Key/binary)*>>: the rows met since
%% odd_reset/0 that are not sessions, and the first of their keys as
%% Erlang prints them.
odd() ->
    {N, Keys} = case erase(migctl_odd) of
                    undefined -> {0, []};
                    V -> V
                end,
    iolist_to_binary([<<N:32>> | [[<<(byte_size(K)):32>>, K] || K <- lists:reverse(Keys)]]).

show(Key) ->
    B = iolist_to_binary(io_lib:format("~0tP", [Key, 8])),
    case byte_size(B) > 120 of
        true -> <<(binary:part(B, 0, 117))/binary, "...">>;
        false -> B
    end.
