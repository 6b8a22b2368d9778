%% migctl_incr: the node-side half of the monitor's incremental verify.
%%
%% A full check costs a pass over every table; a monitor that runs for
%% weeks only needs to look at what changed since its last cycle. The
%% change record is migctl_recorder (migctl_node library): every Mnesia
%% node records, per key, the last change its replica applied, whichever
%% node made it. One node's record therefore covers the whole table.
%%
%% A cycle is two calls (three when something still differs):
%%   changes(MnesiaSpec, Since, Opts) on a node of the Mnesia side: the
%%     keys changed at or after Since (recorder time, ms) and the ids
%%     carried over from the last cycle (Opts' pending: one call, not a
%%     second round for them), each with its digest and last_accessed as
%%     migctl_check:digests_of/2 computes them (the SAME digest the full
%%     check compares), the keys now absent apart, the recorder's time
%%     when the call began, and its coverage (when recording started for
%%     the table, when it was last cleared), from which migctl decides
%%     whether the record covers the whole interval since its last cycle.
%%     The record is read through its time index (migctl_recorder): the
%%     cost is the changes, not the keys recorded.
%%   digests_at(Spec, Ids) on the other side (each node of a union):
%%     per id, in order, absent or {digest, last_accessed}: 1 or 13 bytes,
%%     not the id again.
%%   changed_at(Tab, Ids) on the Mnesia side: when each still differing
%%     id last changed, so that one changed during the cycle is looked at
%%     again next cycle instead of being reported.
%%
%% Ids travel as <<Len:16, Id/binary>> (erlmcp ids are short binaries),
%% and every list of ids or rows is zlib-compressed both ways (erlmcp's ids
%% are 32 hex digits, 16 bytes of entropy; zlib halves them): the wire
%% cost of a cycle is what migctl is measured on, and a cycle's lists are
%% a few tens of KB, a millisecond of zlib.
%%
%% native(MnesiaSpec, OtherNode, OtherSpec, Since) is the reference
%% `make bench' measures migctl against: the same cycle as one Erlang
%% function on the Mnesia node (the other side read with erpc when it
%% lives elsewhere), no Go and no migctl wire in the loop.
%%
%% Contract (as migctl_check): every exported function catches everything
%% and returns {ok, ...} | {error, Atom | Binary}.
-module(migctl_incr).

%% safe/1 and fail/1 are the agents' one error convention (migctl_lib).
-import(migctl_lib, [safe/1, fail/1]).
-export([version/0, mark/1, changes/3, digests_at/2, changed_at/2, native/4]).

-define(VSN, 1).

version() -> {ok, ?VSN}.


now_ms() -> erlang:system_time(millisecond).

%% coverage(Tab) -> {coverage, Started, Since | undefined, Cleared}
%% or no_recorder. Since is when the record of Tab starts to be complete
%% (subscription, or the prune horizon if later); undefined while the
%% recorder is not subscribed to Tab.
coverage(Tab) ->
    case catch migctl_recorder:info() of
        #{running := true, started := Started, tables := Ts} ->
            case [T || T = #{table := X} <- Ts, X =:= Tab] of
                [#{since := S, cleared := C}] -> {coverage, Started, S, C};
                [] -> {coverage, Started, undefined, 0}
            end;
        _ -> no_recorder
    end.

%% mark(Tab) -> {ok, NowMs, Coverage}
%% The recorder's time and coverage before a full pass: the incremental
%% cycles after it start from this time.
mark({mnesia, Tab}) ->
    safe(fun() ->
        Now = now_ms(),
        _ = (catch migctl_recorder:lookup(Tab, [])), % handle what is queued
        {ok, Now, coverage(Tab)}
    end);
mark(_) -> {error, not_mnesia}.

%% changes(Spec, Since, Opts) ->
%%   {ok, Z(<<Len:16, Id, Digest:32, LA:64/signed>>*) (present),
%%        Z(<<Len:16, Id>>*) (absent), Count, NowMs, Coverage}
%% (Z: zlib:compress/1)
%%   | {ok, too_many, Count, NowMs, Coverage}
%% Opts: [{max_keys, N}]: more changed keys than that is reported as
%% too_many (migctl then runs a full pass instead); [{pending, Z(<<Len:16,
%% Id>>*)}]: ids to list as well (present or absent) whether or not the
%% record has them. Count is the number of keys the record listed.
changes({mnesia, Tab} = Spec, Since, Opts) when is_integer(Since) ->
    safe(fun() ->
        %% The time is read BEFORE the recorder syncs: every change it
        %% handles after answering has a time >= Now, so the next cycle,
        %% starting from Now, cannot miss it.
        Now = now_ms(),
        Cov = coverage(Tab),
        Keys = case Cov of
                   no_recorder -> [];
                   _ -> [K || K <- migctl_recorder:changed_since(Tab, Since), is_binary(K)]
               end,
        Max = proplists:get_value(max_keys, Opts, 1000000),
        N = length(Keys),
        case N > Max of
            true -> {ok, too_many, N, Now, Cov};
            false ->
                Pending = case proplists:get_value(pending, Opts) of
                              undefined -> [];
                              Z -> Listed = maps:from_keys(Keys, []),
                                   [P || P <- lists:usort(ids16(zlib:uncompress(Z), [])),
                                         not is_map_key(P, Listed)]
                          end,
                All = Pending ++ Keys,
                Rows = rows(Spec, All),
                {Present, Absent} = lists:foldl(
                    fun(K, {P, A}) ->
                            case maps:find(K, Rows) of
                                {ok, {D, LA}} -> {[[<<(byte_size(K)):16>>, K, <<D:32, LA:64/signed>>] | P], A};
                                error -> {P, [[<<(byte_size(K)):16>>, K] | A]}
                            end
                    end, {[], []}, All),
                {ok, zlib:compress(Present), zlib:compress(Absent), N, Now, Cov}
        end
    end);
changes(_, _, _) -> {error, not_mnesia}.

%% digests_at(Spec, Z(<<Len:16, Id>>*)) -> {ok, Z(<<0>> | <<1, Digest:32, LA:64/signed>> per id), N}
digests_at(Spec, IdsZ) ->
    safe(fun() ->
        Ids = ids16(zlib:uncompress(IdsZ), []),
        Rows = rows(Spec, Ids),
        {ok, zlib:compress([case maps:find(I, Rows) of
                                {ok, {D, LA}} -> <<1, D:32, LA:64/signed>>;
                                error -> <<0>>
                            end || I <- Ids]), map_size(Rows)}
    end).

%% changed_at(Tab, Z(<<Len:16, Id>>*)) -> {ok, <<Millis:64/signed>> per id (0: no record), N}
changed_at({mnesia, Tab}, IdsZ) ->
    safe(fun() ->
        Ids = ids16(zlib:uncompress(IdsZ), []),
        Ch = maps:from_list([{K, Ms} || {K, _, Ms, _, _} <- migctl_recorder:lookup(Tab, Ids)]),
        {ok, iolist_to_binary([<<(maps:get(I, Ch, 0)):64/signed>> || I <- Ids]), length(Ids)}
    end);
changed_at(_, _) -> {error, not_mnesia}.

%% rows(Spec, Ids) -> #{Id => {Digest, LA}} for the ids present, through
%% migctl_check:digests_of/2: the digest the full check compares. A DETS
%% file is read key by key (dets:lookup): batches through dets:lookup_keys/2
%% (1,000 keys a request) measured slower, 35 vs 27 ms for 1,000 keys of a
%% 300k file on a quiet node, a median of 0.73 vs 0.43 s at 1M on a loaded
%% machine (probably because the server then holds the whole batch and
%% replies with one 500 KB message).
rows(_, []) -> #{};
rows(Spec, Ids) ->
    Bin = iolist_to_binary([[<<(byte_size(I)):32>>, I] || I <- Ids]),
    case migctl_check:digests_of(Spec, Bin) of
        {ok, Rows, _} -> parse_rows(Rows, #{});
        {error, R} -> fail(R)
    end.

parse_rows(<<>>, Acc) -> Acc;
parse_rows(<<L:32, Id:L/binary, D:32, LA:64/signed, Rest/binary>>, Acc) ->
    parse_rows(Rest, Acc#{Id => {D, LA}});
parse_rows(_, _) -> fail(bad_digests).

ids16(<<>>, Acc) -> lists:reverse(Acc);
ids16(<<L:16, Id:L/binary, Rest/binary>>, Acc) -> ids16(Rest, [Id | Acc]);
ids16(_, _) -> fail(bad_frame).

%% native(MnesiaSpec, OtherNode, OtherSpec, Since) ->
%%   {ok, Changed, Differing, Micros}
%% The same cycle in one Erlang function on the Mnesia node: the changed
%% keys, both sides' digests of them (the other side through erpc when it
%% is on another node), and the first-level comparison (digest and
%% last_accessed equal). Micros is the node's own measure.
native({mnesia, Tab} = Spec, Node, Other, Since) ->
    safe(fun() ->
        T0 = erlang:monotonic_time(microsecond),
        Keys = [K || K <- migctl_recorder:changed_since(Tab, Since), is_binary(K)],
        A = rows(Spec, Keys),
        B = case Node =:= node() of
                true -> rows(Other, Keys);
                false -> erpc:call(Node, fun() -> rows(Other, Keys) end, 60000)
            end,
        Differ = length([K || K <- Keys, maps:find(K, A) =/= maps:find(K, B)]),
        {ok, length(Keys), Differ, erlang:monotonic_time(microsecond) - T0}
    end);
native(_, _, _, _) -> {error, not_mnesia}.
